using System.Diagnostics;
using System.Diagnostics.Metrics;
using Swarm.Coordinator.Jobs;
using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Service;
using Swarm.Telemetry;
using static Swarm.Telemetry.SwarmTelemetry;

namespace Swarm.Coordinator.Telemetry;

/// <summary>
/// The coordinator's <see cref="ActivitySource"/> and <see cref="Meter"/> (both named <see cref="Name"/>).
/// Spans: <c>job</c> (one per generation; the root of the job's trace) with children <c>route</c> (choosing a
/// chain) and <c>step</c> (one per attempt of a prefill/decode/replay step; its context travels in the
/// <c>ForwardRequest</c> envelope, so every node's <c>stage.forward</c> span joins the trace). Failures are
/// <c>step.failed</c> events on the step, recoveries <c>recovery</c> events on the job (node id and reason).
/// Metrics are listed in <c>README.md</c> (Telemetry) and created below; observable ones read the registered
/// coordinators and job runners.
/// </summary>
internal static class CoordinatorInstrumentation
{
    /// <summary>Name of the activity source and the meter.</summary>
    public const string Name = "Swarm.Coordinator";

    /// <summary>Span names.</summary>
    public const string JobSpan = "job", RouteSpan = "route", StepSpan = "step";

    /// <summary>Span event names.</summary>
    public const string StepFailedEvent = "step.failed", RecoveryEvent = "recovery", AdmittedEvent = "admitted";

    public static readonly ActivitySource Source = new(Name, SwarmTelemetry.Version);
    public static readonly Meter Meter = new(Name, SwarmTelemetry.Version);

    private static readonly ObservedSet<SwarmCoordinator> Coordinators = new();
    private static readonly ObservedSet<JobRunner> Runners = new();

    /// <summary><c>swarm.jobs</c>: jobs that ended, by <c>outcome</c> = completed | failed | cancelled | rejected.</summary>
    internal static readonly Counter<long> Jobs =
        Meter.CreateCounter<long>("swarm.jobs", "{job}", "Generation jobs that ended, by outcome (completed, failed, cancelled, rejected).");

    /// <summary><c>swarm.tokens.generated</c>: tokens sampled for jobs (every token a client was sent).</summary>
    internal static readonly Counter<long> TokensGenerated =
        Meter.CreateCounter<long>("swarm.tokens.generated", "{token}", "Tokens generated for jobs.");

    /// <summary><c>swarm.job.time_to_first_token</c>: submission (incl. queueing) to the first token, seconds.</summary>
    internal static readonly Histogram<double> TimeToFirstToken =
        Meter.CreateHistogram("swarm.job.time_to_first_token", "s", "Time from a job's submission (including queueing and prefill) to its first token.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBucketsSeconds });

    /// <summary><c>swarm.job.time_per_output_token</c>: gap between consecutive tokens of a job, one observation per token after the first.</summary>
    internal static readonly Histogram<double> TimePerOutputToken =
        Meter.CreateHistogram("swarm.job.time_per_output_token", "s", "Time between consecutive output tokens of a job (one observation per token after the first).",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBucketsSeconds });

    /// <summary><c>swarm.recoveries</c>: route repairs, by <c>swarm.reason</c> (the failed step's error code, timeout, disconnected).</summary>
    internal static readonly Counter<long> Recoveries =
        Meter.CreateCounter<long>("swarm.recoveries", "{recovery}", "Route repairs after a failed step, by reason (error code, timeout, disconnected).");

    /// <summary>
    /// <c>swarm.verification.checks</c> (Prometheus <c>swarm_verification_checks_total</c>): spot-checked steps by outcome —
    /// passed, failed (a node was caught and banned), timeout (the shadow did not answer within its patience; nobody
    /// blamed), inconclusive (the shadow failed the step, or no majority).
    /// </summary>
    internal static readonly Counter<long> VerificationChecks =
        Meter.CreateCounter<long>("swarm.verification.checks", "{check}", "Spot-checked steps, by outcome (passed, failed, timeout, inconclusive).");

    /// <summary>Counts one spot-checked step's outcome.</summary>
    internal static void Checked(string outcome) => VerificationChecks.Add(1, new KeyValuePair<string, object?>("outcome", outcome));

    static CoordinatorInstrumentation()
    {
        Meter.CreateObservableGauge("swarm.nodes", ObserveNodes, "{node}", "Registered nodes by state (joining, loading, serving, draining, suspect, dead, left).");
        Meter.CreateObservableGauge("swarm.layer.replicas", ObserveLayerReplicas, "{node}",
            "Routable (serving or suspect) nodes holding each layer (tag layer = layer index; at most the model's depth series).");
        Meter.CreateObservableGauge("swarm.layers.min_replicas", ObserveMinReplicas, "{node}",
            "Fewest routable nodes holding any one layer; 0 means some layer is not served.");
        Meter.CreateObservableGauge("swarm.jobs.queued", () => Sum(r => r.Queued), "{job}", "Jobs waiting for admission (queue depth).");
        Meter.CreateObservableGauge("swarm.jobs.running", () => Sum(r => r.Running), "{job}", "Jobs generating now.");
        Meter.CreateObservableGauge("swarm.kv.used", () => SumLive(l => l.KvTokensUsed), "{token}",
            "KV cache positions in use, summed over live nodes (from their heartbeats).");
        Meter.CreateObservableGauge("swarm.kv.capacity", () => SumLive(l => l.KvTokensCapacity), "{token}",
            "KV cache positions the live nodes can hold, summed (from their heartbeats).");
        Swarm.Transport.TransportInstrument.Create(Meter, () => Coordinators.Snapshot().Select(c => c.TransportCounters).OfType<Swarm.Transport.TransportCounters>());
    }

    /// <summary>Makes <paramref name="swarm"/>'s membership, coverage, KV and transport figures observable; dispose to stop.</summary>
    public static IDisposable Observe(SwarmCoordinator swarm) => Coordinators.Add(swarm);

    /// <summary>Makes <paramref name="jobs"/>' queue depth and running jobs observable; dispose to stop.</summary>
    public static IDisposable Observe(JobRunner jobs) => Runners.Add(jobs);

    /// <summary>Counts a job that ended with <paramref name="outcome"/> (tag: completed, failed, cancelled, rejected).</summary>
    internal static void JobEnded(JobOutcome outcome) =>
        Jobs.Add(1, new KeyValuePair<string, object?>(OutcomeTag, OutcomeTags[(int)outcome]));

    private static readonly string[] OutcomeTags = [.. Enum.GetNames<JobOutcome>().Select(n => n.ToLowerInvariant())];

    /// <summary>Counts a route repair.</summary>
    internal static void Recovered(string reason) => Recoveries.Add(1, new KeyValuePair<string, object?>(ReasonTag, reason));

    /// <summary>
    /// Starts the <c>job</c> span. Its parent is the ambient activity when some listener records it (it came from an
    /// <see cref="ActivitySource"/>), or else the remote context an HTTP client sent (<c>traceparent</c> header, which
    /// ASP.NET Core's own request activity carries as its parent); otherwise the job is the root of a new trace —
    /// never the child of ASP.NET Core's unexported per-request activity, whose span id no backend would know.
    /// </summary>
    internal static Activity? StartJob(string id, int promptTokens, int maxNewTokens)
    {
        var ambient = Activity.Current;
        bool exported = ambient is { Recorded: true } && ambient.Source.Name.Length > 0;
        ActivityContext parent = default;
        if (exported) parent = ambient!.Context;
        else if (ambient is { Parent: null, ParentId: { } remote })
            ActivityContext.TryParse(remote, ambient.TraceStateString, isRemote: true, out parent);
        if (ambient is not null && !exported) Activity.Current = null;
        var activity = Source.StartActivity(JobSpan, ActivityKind.Internal, parent);
        activity?.SetTag(JobIdTag, id);
        activity?.SetTag("swarm.prompt_tokens", promptTokens);
        activity?.SetTag("swarm.max_new_tokens", maxNewTokens);
        return activity;
    }

    /// <summary>
    /// Starts a <c>step</c> span (a child of the job's): the step number, its kind, the session, the input tokens it
    /// carries and, for a speculating job, how many of them are drafts (<paramref name="draftTokens"/> null otherwise).
    /// </summary>
    internal static Activity? StartStep(int step, string kind, long session, int inputTokens, int? draftTokens)
    {
        var activity = Source.StartActivity(StepSpan, ActivityKind.Client);
        activity?.SetTag(SwarmTelemetry.StepTag, step);
        activity?.SetTag(SwarmTelemetry.StepKindTag, kind);
        activity?.SetTag(SwarmTelemetry.SessionTag, session);
        activity?.SetTag("swarm.input_tokens", inputTokens);
        if (draftTokens is { } drafts) activity?.SetTag("swarm.draft_tokens", drafts);
        return activity;
    }

    private static IEnumerable<Measurement<long>> ObserveNodes()
    {
        var counts = Enum.GetValues<NodeStatus>().ToDictionary(s => s, _ => 0L);
        foreach (var swarm in Coordinators.Snapshot())
            foreach (var n in swarm.Registry.Snapshot())
                counts[n.State]++;
        return counts.Select(kv => new Measurement<long>(kv.Value, new KeyValuePair<string, object?>(StateTag, kv.Key.ToString().ToLowerInvariant())));
    }

    private static int[] Replicas(SwarmCoordinator swarm)
    {
        var perLayer = new int[swarm.Config.NumLayers];
        foreach (var n in swarm.Registry.Snapshot())
        {
            if (n.RoutableRange is not { } r) continue;
            for (int l = Math.Max(0, r.Start); l < Math.Min(perLayer.Length, r.End); l++) perLayer[l]++;
        }
        return perLayer;
    }

    private static IEnumerable<Measurement<long>> ObserveLayerReplicas()
    {
        foreach (var swarm in Coordinators.Snapshot())
        {
            var perLayer = Replicas(swarm);
            for (int l = 0; l < perLayer.Length; l++)
                yield return new Measurement<long>(perLayer[l], new KeyValuePair<string, object?>(LayerTag, l));
        }
    }

    private static IEnumerable<Measurement<long>> ObserveMinReplicas()
    {
        foreach (var swarm in Coordinators.Snapshot())
        {
            var perLayer = Replicas(swarm);
            yield return new Measurement<long>(perLayer.Length == 0 ? 0 : perLayer.Min());
        }
    }

    private static long Sum(Func<JobRunner, int> f) => Runners.Snapshot().Sum(r => (long)f(r));

    private static long SumLive(Func<SwarmCoordinator.NodeLive, long> f) =>
        Coordinators.Snapshot().Sum(c => c.Live.Values.Sum(f));
}
