using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Routing;
using Swarm.Coordinator.Telemetry;
using Swarm.Coordinator.Verification;
using Swarm.Telemetry;
using Swarm.Protocol;

namespace Swarm.Coordinator.Jobs;

/// <summary>
/// Opens <see cref="RouteSession"/>s: routes a job over the registry's routable nodes (the best of them per layer when
/// there are many: <see cref="RouteCandidateIndex"/>; waiting, up to the queue
/// timeout, for every layer to be served) and gives each route a fresh session id, unique across the coordinator's
/// restarts (it starts at the clock's milliseconds × 2¹⁶).
/// </summary>
internal sealed class RouteSessionFactory
{
    /// <summary>How often routing is retried while some layers are not served.</summary>
    public static readonly TimeSpan RetryInterval = TimeSpan.FromMilliseconds(100);

    private readonly NodeRegistry _registry;
    private readonly IRouter _router;
    private readonly RouteCandidateIndex _candidates;
    private readonly IStepChannel _channel;
    private readonly TimeProvider _time;
    private readonly JobRunnerOptions _options;
    private readonly Nat.HopPathPlanner? _paths;
    private long _nextSession;

    /// <param name="paths">How hops between nodes are made (direct, punched, relayed); null: all direct (unit tests).</param>
    public RouteSessionFactory(NodeRegistry registry, IRouter router, IStepChannel channel, TimeProvider time, JobRunnerOptions options,
        Nat.HopPathPlanner? paths = null)
    {
        _paths = paths;
        _registry = registry;
        _router = router;
        _candidates = new RouteCandidateIndex(registry, router.Options);
        _channel = channel;
        _time = time;
        _options = options;
        _nextSession = time.GetUtcNow().ToUnixTimeMilliseconds() << 16;
    }

    /// <summary>The registry whose nodes the routes run through.</summary>
    public NodeRegistry Registry => _registry;

    /// <summary>Subscribes to the replies of job <paramref name="jobId"/>; the job's sessions deliver their replies there.</summary>
    public JobReplyInbox OpenInbox(long jobId) => new(_channel, jobId, _paths);

    /// <summary>A fresh session id (for routes, shadow sessions and arbitration replays alike).</summary>
    public long NextSessionId() => Interlocked.Increment(ref _nextSession);

    /// <summary>
    /// Routes the job and opens a session on the route whose replies arrive in <paramref name="inbox"/>; with a
    /// <paramref name="checker"/>, the session may be drawn for a spot check (for certain when its checked hop is on
    /// probation and <paramref name="alwaysOnProbation"/>).
    /// </summary>
    /// <exception cref="JobFailedException">Some layers stayed unserved for the whole queue timeout (503).</exception>
    public async Task<RouteSession> OpenAsync(JobReplyInbox inbox, CancellationToken ct, SpotChecker? checker = null, bool alwaysOnProbation = false)
    {
        Route route;
        using (var span = CoordinatorInstrumentation.Source.StartActivity(CoordinatorInstrumentation.RouteSpan))
        {
            try { route = await RouteAsync(ct).ConfigureAwait(false); }
            catch (JobFailedException e) { SwarmTelemetry.RecordFailure(span, "route.failed", null, e.Message, e.Code); throw; }
            span?.SetTag("swarm.route", route.ToString());
            span?.SetTag("swarm.route.hops", route.Hops.Count);
        }
        var wire = RouteSession.WireHops(route, _registry);
        if (_paths is not null) wire = await _paths.PlanAsync(wire, ct).ConfigureAwait(false);
        return new RouteSession(route, NextSessionId(), _registry, _channel, inbox, _time, _options.StepTimeout, wire, checker?.Plan(route, alwaysOnProbation));
    }

    private async Task<Route> RouteAsync(CancellationToken ct)
    {
        long started = _time.GetTimestamp();
        while (true)
        {
            var result = _router.Route(_options.NumLayers, _candidates.Candidates(new LayerRange(0, _options.NumLayers)));
            if (result.Route is { } r) return r;
            if (_time.GetElapsedTime(started) > _options.QueueTimeout)
                throw new JobFailedException($"no route covers the model: {LayerRange.DescribeAll(result.Uncovered)} not served by any node", 503, "layers_uncovered");
            await Task.Delay(RetryInterval, _time, ct).ConfigureAwait(false);
        }
    }
}
