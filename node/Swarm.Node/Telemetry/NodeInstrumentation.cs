using System.Diagnostics;
using System.Diagnostics.Metrics;
using Swarm.Protocol;
using Swarm.Telemetry;
using static Swarm.Telemetry.SwarmTelemetry;

namespace Swarm.Node.Telemetry;

/// <summary>
/// The node's <see cref="ActivitySource"/> and <see cref="Meter"/> (both named <see cref="Name"/>).
/// Spans: <c>stage.forward</c> (this node's hop of a step; child of the remote context carried in the
/// <c>ForwardRequest</c> envelope, and itself the parent carried on to the next hop) and, on the last
/// stage, <c>sample</c>. A failed step is a <c>step.failed</c> event (node id, reason, error code).
/// </summary>
public static class NodeInstrumentation
{
    /// <summary>Name of the activity source and the meter.</summary>
    public const string Name = "Swarm.Node";

    /// <summary>Span names.</summary>
    public const string ForwardSpan = "stage.forward", SampleSpan = "sample";

    /// <summary>Span event name for a step this node could not run or hand on.</summary>
    public const string StepFailedEvent = "step.failed";

    public static readonly ActivitySource Source = new(Name, SwarmTelemetry.Version);
    public static readonly Meter Meter = new(Name, SwarmTelemetry.Version);

    private static readonly ObservedSet<NodeDaemon> Daemons = new();

    /// <summary><c>swarm.node.forward.duration</c>: this stage's forward (and sampling on the last stage) per step, by <c>swarm.step.kind</c>.</summary>
    internal static readonly Histogram<double> ForwardDuration =
        Meter.CreateHistogram("swarm.node.forward.duration", "s", "Time this node's stage took per step (forward through its layers, plus sampling on the last stage), by step kind.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBucketsSeconds });

    /// <summary><c>swarm.node.steps</c>: steps this node handled, by <c>outcome</c> = ok or the error code sent back.</summary>
    internal static readonly Counter<long> Steps =
        Meter.CreateCounter<long>("swarm.node.steps", "{step}", "Steps this node handled, by outcome (ok, or the error code it replied with).");

    /// <summary><c>swarm.node.tokens</c>: token positions run through this stage (prefill counts every prompt token).</summary>
    internal static readonly Counter<long> Tokens =
        Meter.CreateCounter<long>("swarm.node.tokens", "{token}", "Token positions run through this node's layers.");

    private static readonly Histogram<long> BatchSize =
        Meter.CreateHistogram("swarm.node.batch.size", "{step}", "Steps run together in one forward pass.",
            advice: new InstrumentAdvice<long> { HistogramBucketBoundaries = BatchSizeBuckets });

    static NodeInstrumentation()
    {
        Meter.CreateObservableGauge("swarm.node.kv.used", () => Sum(d => d.LastHeartbeat?.KvTokensUsed ?? 0), "{token}", "KV cache positions in use on this node.");
        Meter.CreateObservableGauge("swarm.node.kv.capacity", () => Sum(d => d.LastHeartbeat?.KvTokensCapacity ?? 0), "{token}", "KV cache positions this node's memory budget holds.");
        Meter.CreateObservableGauge("swarm.node.sessions", () => Sum(d => d.LastHeartbeat?.Sessions ?? 0), "{session}", "Sessions with a KV cache on this node.");
        Meter.CreateObservableGauge("swarm.node.queue.depth", () => Sum(d => d.InFlight), "{step}", "Steps accepted by this node and not finished (queued or running).");
        Meter.CreateObservableGauge("swarm.node.state", ObserveState, "{node}", "1 for this node's current state (idle, loading, ready, draining), 0 for the others.");
        Swarm.Transport.TransportInstrument.Create(Meter, () => Daemons.Snapshot().Select(d => d.TransportCounters).OfType<Swarm.Transport.TransportCounters>());
    }

    /// <summary>Makes <paramref name="daemon"/>'s KV, session, queue, state and transport figures observable; dispose to stop.</summary>
    public static IDisposable Observe(NodeDaemon daemon) => Daemons.Add(daemon);

    /// <summary>
    /// Records one forward pass over <paramref name="size"/> steps (<c>swarm.node.batch.size</c>). The compute loop
    /// calls it once per batched iteration with the number of sessions' steps (decodes and prefill chunks) in it.
    /// </summary>
    public static void RecordBatch(int size) => BatchSize.Record(size);

    /// <summary>Counts a handled step: "ok" or the <see cref="ErrorCode"/> replied.</summary>
    internal static void StepHandled(string outcome) => Steps.Add(1, new KeyValuePair<string, object?>(OutcomeTag, outcome));

    /// <summary>Starts <c>stage.forward</c> as a child of the trace context the request's envelope carries (a root when it carries none).</summary>
    internal static Activity? StartForward(Envelope envelope, ForwardRequest req, int nodeId)
    {
        envelope.TryGetParentContext(out var parent);
        var activity = Source.StartActivity(ForwardSpan, ActivityKind.Server, parent);
        if (activity is null) return null;
        activity.SetTag(NodeIdTag, nodeId);
        if (req.Route.Length > 0) activity.SetTag(LayersTag, req.Route[0].Layers.ToString());
        if (req.Route is [{ Key: { Length: Swarm.Transport.Security.PeerKey.Length } key }, ..]) activity.SetTag(NodeKeyTag, Swarm.Transport.Security.PeerKey.Fingerprint(key));
        activity.SetTag(StepTag, req.Step);
        activity.SetTag(StepKindTag, req.Kind.ToString().ToLowerInvariant());
        activity.SetTag(SessionTag, req.SessionId);
        return activity;
    }

    private static long Sum(Func<NodeDaemon, long> f) => Daemons.Snapshot().Sum(f);

    private static IEnumerable<Measurement<int>> ObserveState()
    {
        var daemons = Daemons.Snapshot();
        foreach (var s in Enum.GetValues<NodeReadiness>())
            yield return new Measurement<int>(daemons.Any(d => d.State == s) ? 1 : 0,
                new KeyValuePair<string, object?>(StateTag, s.ToString().ToLowerInvariant()));
    }
}
