using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Swarm.Telemetry;

/// <summary>
/// Names and helpers both the coordinator's and the node's instrumentation use: span attribute and
/// metric tag keys (low-cardinality values only on metrics), histogram buckets.
/// Depends only on <c>System.Diagnostics</c>; the hosts wire exporters.
/// </summary>
public static class SwarmTelemetry
{
    /// <summary>Instrumentation version reported with every <see cref="ActivitySource"/> and <see cref="Meter"/>.</summary>
    public const string Version = "1.0.0";

    // Span attributes and metric tags. Metric tags take only bounded values (states, kinds, error codes, layer indices).
    public const string NodeIdTag = "swarm.node.id";

    /// <summary>Span attribute: the fingerprint of a node's public key (<c>swarm:…</c>), its identity across restarts and ids.</summary>
    public const string NodeKeyTag = "swarm.node.key";
    public const string LayersTag = "swarm.layers";
    public const string StepTag = "swarm.step";
    public const string StepKindTag = "swarm.step.kind";
    public const string SessionTag = "swarm.session.id";
    public const string JobIdTag = "swarm.job.id";
    public const string ReasonTag = "swarm.reason";
    public const string ErrorCodeTag = "error.type";
    public const string OutcomeTag = "outcome";
    public const string StateTag = "state";
    public const string LayerTag = "layer";
    public const string DirectionTag = "direction";

    /// <summary>Bucket bounds (seconds) for latencies from sub-millisecond loopback hops to multi-second WAN prefills.</summary>
    public static readonly IReadOnlyList<double> LatencyBucketsSeconds =
        [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

    /// <summary>Bucket bounds for batch sizes (steps run together in one forward).</summary>
    public static readonly IReadOnlyList<long> BatchSizeBuckets = [1, 2, 4, 8, 16, 32, 64, 128];

    /// <summary>Marks <paramref name="activity"/> failed and records why as a span event (name, node, reason).</summary>
    /// <param name="activity">The failed span; nothing happens when null.</param>
    /// <param name="eventName">Name of the span event.</param>
    /// <param name="nodeId">The node at fault (<see cref="Swarm.Protocol.Welcome.NodeId"/>), or null when unknown.</param>
    /// <param name="reason">Human-readable cause.</param>
    /// <param name="code">Machine-readable cause, when there is one.</param>
    public static void RecordFailure(Activity? activity, string eventName, int? nodeId, string reason, string? code = null)
    {
        if (activity is null) return;
        activity.SetStatus(ActivityStatusCode.Error, reason);
        activity.AddEvent(FailureEvent(eventName, nodeId, reason, code));
    }

    /// <summary>
    /// A span event naming the reason and, when known, the node (an int, as on the <c>stage.forward</c> span), the error code and the step.
    /// </summary>
    public static ActivityEvent FailureEvent(string eventName, int? nodeId, string reason, string? code = null, int? step = null)
    {
        var tags = new ActivityTagsCollection { [ReasonTag] = reason };
        if (nodeId is { } n) tags[NodeIdTag] = n;
        if (code is not null) tags[ErrorCodeTag] = code;
        if (step is { } s) tags[StepTag] = s;
        return new ActivityEvent(eventName, tags: tags);
    }
}

/// <summary>
/// Objects observable instruments read (a coordinator, a node daemon), held weakly so that one left
/// undisposed (tests create many) is not kept alive by a static instrument.
/// </summary>
public sealed class ObservedSet<T> where T : class
{
    private readonly object _gate = new();
    private readonly List<WeakReference<T>> _items = [];

    /// <summary>Adds <paramref name="item"/>; dispose the result to remove it.</summary>
    public IDisposable Add(T item)
    {
        var weak = new WeakReference<T>(item);
        lock (_gate) _items.Add(weak);
        return new Remover(this, weak);
    }

    /// <summary>The items still registered and alive.</summary>
    public List<T> Snapshot()
    {
        var live = new List<T>();
        lock (_gate)
        {
            _items.RemoveAll(w => !w.TryGetTarget(out _));
            foreach (var w in _items)
                if (w.TryGetTarget(out var t)) live.Add(t);
        }
        return live;
    }

    private sealed class Remover(ObservedSet<T> set, WeakReference<T> item) : IDisposable
    {
        public void Dispose()
        {
            lock (set._gate) set._items.Remove(item);
        }
    }
}
