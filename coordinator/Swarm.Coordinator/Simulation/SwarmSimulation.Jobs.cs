using System.Globalization;
using Swarm.Coordinator.Jobs;
using Swarm.Coordinator.Membership;
using Swarm.Protocol;

namespace Swarm.Coordinator.Simulation;

/// <summary>The simulated jobs: admission, routing, step timing, stalls on departed nodes, recovery.</summary>
public sealed partial class SwarmSimulation
{
    /// <summary>A step's patience once decoding runs (JobStepLoop: max(400 ms, 4 × the recent step)).</summary>
    private static readonly JobRunnerOptions JobDefaults = new() { NumLayers = 1, ContextLength = 1 };
    private static readonly TimeSpan MinPatience = JobDefaults.MinPatience;
    private static readonly TimeSpan QueueTimeout = JobDefaults.QueueTimeout;
    private static readonly TimeSpan StepTimeout = JobDefaults.StepTimeout;
    /// <summary>Positions a stage runs in the time of one decode step during prefill (prefill is compute-bound, batched).</summary>
    private const double PrefillPositionsPerStep = 32;
    /// <summary>Slow-down of a node's step per other session it runs (batched decode shares the weights' memory reads).</summary>
    private const double SharingPenalty = 0.1;

    private void Submit()
    {
        var job = new SimulatedJob(++_nextJobId, _clock.Elapsed);
        _jobs[job.Id] = job;
        _stats.Submitted++;
        var ev = _admission.Submit(Key(job.Id));
        if (ev.Outcome == AdmissionOutcome.Started) StartRoute(job);
        else if (ev.Outcome == AdmissionOutcome.RejectedQueueFull) Finish(job, JobEndKind.Rejected);
    }

    private static string Key(long id) => id.ToString(CultureInfo.InvariantCulture);

    private void Admitted(AdmissionEvent ev)
    {
        var job = _jobs[long.Parse(ev.JobId, CultureInfo.InvariantCulture)];
        if (ev.Outcome == AdmissionOutcome.Started) StartRoute(job);
        else if (ev.Outcome == AdmissionOutcome.TimedOut) Finish(job, JobEndKind.Rejected);
    }

    /// <summary>Routes the job over the registry's routable nodes (RouteSessionFactory: retried every 100 ms up to the queue timeout).</summary>
    private void StartRoute(SimulatedJob job)
    {
        var now = _clock.Elapsed;
        var result = _router.Route(_model.NumLayers, _candidates.Candidates(new LayerRange(0, _model.NumLayers)));
        if (result.Route is not { } route)
        {
            job.RoutingSince ??= now;
            if (now - job.RoutingSince.Value > QueueTimeout) { Finish(job, JobEndKind.Failed); return; }
            job.Version++;
            _events.Schedule(now + RouteSessionFactory.RetryInterval, new SimEvent(SimEventKind.JobRetryRoute, job.Id, job.Version));
            return;
        }
        job.RoutingSince = null;
        job.Route = route;
        job.Version++;
        job.StalledAt = null;
        foreach (var hop in route.Hops)
        {
            _registry.AdjustInFlight(hop.NodeId, +1);
            _all[hop.NodeId].Jobs.Add(job.Id);
        }
        // One decode step: coordinator → first hop → … → last hop → coordinator, each hop's compute slowed by its other sessions.
        double latency = 0, compute = 0, prefill = 0;
        int positions = _o.PromptTokens + job.Done;
        SimulatedNode? previous = null;
        foreach (var hop in route.Hops)
        {
            var node = _all[hop.NodeId];
            double rtt = previous is null ? node.RttToCoordinatorMs : Geography.RttMs(previous.Place, node.Place);
            latency += rtt / 2;
            if (previous is not null && !previous.Links.ContainsKey(node.Id) && previous.Links.Count < Heartbeat.MaxLinks)
            {
                previous.Links[node.Id] = new LinkReport { ToNodeId = node.Id, Path = HopPath.Direct, RttMs = rtt };
                previous.LinksChanged = true;
            }
            int inFlight = _registry.Get(hop.NodeId)?.InFlight ?? 1;
            double step = hop.Layers.Count * 1000.0 / node.Machine.LayerTokensPerSecond;
            compute += step * (1 + SharingPenalty * Math.Max(0, inFlight - 1));
            prefill += step * Math.Max(1, positions / PrefillPositionsPerStep);
            previous = node;
        }
        latency += previous!.RttToCoordinatorMs / 2;
        job.TokenMs = latency + compute;
        job.FirstTokenAt = now + TimeSpan.FromMilliseconds(latency + prefill);
        int remaining = _o.NewTokens - job.Done;
        _events.Schedule(job.FirstTokenAt + TimeSpan.FromMilliseconds(job.TokenMs * (remaining - 1)), new SimEvent(SimEventKind.JobEnd, job.Id, job.Version));
    }

    private void RetryRoute(long id, long version)
    {
        if (_jobs.TryGetValue(id, out var job) && !job.Finished && job.Version == version) StartRoute(job);
    }

    /// <summary>Tokens of the current segment that arrived by <paramref name="t"/>.</summary>
    private int TokensBy(SimulatedJob job, TimeSpan t, int remaining) =>
        t < job.FirstTokenAt ? 0 : Math.Min(remaining, 1 + (int)((t - job.FirstTokenAt).TotalMilliseconds / job.TokenMs));

    /// <summary>Counts the segment's tokens up to <paramref name="t"/>: inter-token gaps, node compute; releases the route.</summary>
    private void CloseSegment(SimulatedJob job, TimeSpan t)
    {
        if (job.Route is not { } route) return;
        int remaining = _o.NewTokens - job.Done;
        int tokens = TokensBy(job, t, remaining);
        if (tokens > 0)
        {
            if (job.LastTokenAt is { } last) _stats.TokenGap((job.FirstTokenAt - last).TotalMilliseconds, 1);
            else _stats.FirstToken((job.FirstTokenAt - job.SubmittedAt).TotalMilliseconds);
            if (tokens > 1) _stats.TokenGap(job.TokenMs, tokens - 1);
            job.LastTokenAt = job.FirstTokenAt + TimeSpan.FromMilliseconds(job.TokenMs * (tokens - 1));
            job.Done += tokens;
        }
        foreach (var hop in route.Hops)
        {
            var node = _all[hop.NodeId];
            node.BusyMs += tokens * hop.Layers.Count * 1000.0 / node.Machine.LayerTokensPerSecond;
            node.Jobs.Remove(job.Id);
            _registry.AdjustInFlight(hop.NodeId, -1);
        }
        job.Route = null;
    }

    private void JobEnded(long id, long version)
    {
        if (!_jobs.TryGetValue(id, out var job) || job.Finished || job.Version != version || job.StalledAt is not null) return;
        CloseSegment(job, _clock.Elapsed);
        Finish(job, JobEndKind.Completed);
    }

    /// <summary>A node on the job's route departed at this moment: the step in flight then is never answered.</summary>
    private void Stall(SimulatedJob job, int nodeId)
    {
        if (job.Finished || job.StalledAt is not null || job.Route is null) return;
        var now = _clock.Elapsed;
        job.StalledAt = now;
        job.StalledOn = nodeId;
        job.Version++;
        int remaining = _o.NewTokens - job.Done;
        int tokens = TokensBy(job, now, remaining);
        // The stuck step was sent when the last token before the departure arrived; decode steps have patience, a prefill waits for the loss.
        if (tokens == 0) { _events.Schedule(now + StepTimeout, new SimEvent(SimEventKind.JobCheck, job.Id, job.Version)); return; }
        var sentAt = job.FirstTokenAt + TimeSpan.FromMilliseconds(job.TokenMs * (tokens - 1));
        var patience = TimeSpan.FromMilliseconds(Math.Max(MinPatience.TotalMilliseconds, 4 * job.TokenMs));
        var checkAt = sentAt + patience > now ? sentAt + patience : now;
        _events.Schedule(checkAt, new SimEvent(SimEventKind.JobCheck, job.Id, job.Version));
    }

    /// <summary>The stuck step's patience has run out: repair when a node of the route is no longer alive, else look again in 100 ms.</summary>
    private void JobCheck(long id, long version)
    {
        if (!_jobs.TryGetValue(id, out var job) || job.Finished || job.Version != version || job.StalledAt is not { } since) return;
        var now = _clock.Elapsed;
        bool silent = job.Route!.NodeIds.Any(n => _registry.Get(n) is not { } s || s.Health != NodeHealth.Alive);
        if (silent || now - since >= StepTimeout) { Recover(job, job.StalledOn, reportFailure: true); return; }
        _events.Schedule(now + RouteSession.SilenceRecheckInterval, new SimEvent(SimEventKind.JobCheck, job.Id, job.Version));
    }

    /// <summary>JobStepLoop.RecoverAsync: report the culprit, release the route, give up past the limit, else re-route and replay.</summary>
    private void Recover(SimulatedJob job, int culprit, bool reportFailure)
    {
        if (job.Finished || job.Route is null) return;
        var stalledAt = job.StalledAt ?? _clock.Elapsed;
        CloseSegment(job, stalledAt);
        job.Recoveries++;
        _stats.Recoveries++;
        if (reportFailure && _registry.Get(culprit) is not null) _registry.ReportFailure(culprit);
        if (job.Recoveries > _o.MaxRecoveriesPerJob) { Finish(job, JobEndKind.Failed); return; }
        job.StalledAt = null;
        if (job.Done >= _o.NewTokens) { Finish(job, JobEndKind.Completed); return; }
        StartRoute(job);
    }

    private void Finish(SimulatedJob job, JobEndKind kind)
    {
        if (job.Finished) return;
        if (job.Route is not null) CloseSegment(job, _clock.Elapsed);
        job.Finished = true;
        _stats.Ended(kind, job.Recoveries);
        _jobs.Remove(job.Id);
        foreach (var ev in _admission.Complete(Key(job.Id))) Admitted(ev);
    }
}
