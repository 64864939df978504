using System.Diagnostics;
using System.Globalization;
using Swarm.Coordinator.Jobs;
using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Placement;
using Swarm.Coordinator.Routing;
using Swarm.Model;
using Swarm.Protocol;

namespace Swarm.Coordinator.Simulation;

/// <summary>
/// <c>swarm sim</c>: a discrete-event simulation of a volunteer swarm around one coordinator, on virtual time
/// (<see cref="VirtualClock"/>, <see cref="EventQueue{T}"/>). The coordinator's decisions are its real classes, fed
/// what the network would feed them: <see cref="NodeRegistry"/> with its failure detector gets every heartbeat and
/// failure report; <see cref="PlacementController"/> (the coordinator's own glue around
/// <see cref="MaxMinThroughputPlacementPolicy"/>) places joining nodes, recovers lost layers and rebalances on the
/// 250 ms evaluation tick; <see cref="ShortestPathRouter"/> with power-of-two-choices routes every job;
/// <see cref="JobAdmissionController"/> admits them. Simulated are the machines (<see cref="MachineProfiles"/>), the
/// WAN (<see cref="Geography"/>), weight loading, churn, job arrivals and step timing; a job's steps are not events one by
/// one — a route's tokens follow at a computed interval until the job ends or a node on the route departs, when the job
/// recovers as <see cref="JobStepLoop"/> does (patience then silence, or the node's loss; re-route and replay).
/// </summary>
public sealed partial class SwarmSimulation
{
    private readonly SimulationOptions _o;
    private readonly ModelConfig _model;
    private readonly Random _random;
    private readonly VirtualClock _clock = new();
    private readonly EventQueue<SimEvent> _events = new();
    private readonly NodeRegistry _registry;
    private readonly PlacementController _control;
    private readonly ShortestPathRouter _router;
    private readonly RouteCandidateIndex _candidates;
    private readonly JobAdmissionController _admission;
    private readonly SortedDictionary<int, SimulatedNode> _online = [];     // by node id: heartbeating nodes
    private readonly Dictionary<int, SimulatedNode> _all = [];              // every node ever, by id
    private readonly Dictionary<long, SimulatedJob> _jobs = [];
    private readonly SimulationStatistics _stats = new();
    private readonly TimeSpan _warmUp = TimeSpan.FromMinutes(10);
    private readonly TimeSpan _end;
    private readonly long _layerDownloadBytes;
    private readonly double _layerScale;
    private int _nextNodeId;
    private long _nextJobId;

    /// <summary>Sets up the swarm (nothing runs before <see cref="Run"/>).</summary>
    /// <exception cref="ArgumentException">The options are invalid (all problems listed) or the preset is unknown.</exception>
    public SwarmSimulation(SimulationOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate();
        if (errors.Count > 0) throw new ArgumentException("invalid simulation options: " + string.Join("; ", errors));
        _o = options;
        _model = Presets.Get(options.Preset);
        _random = new Random(options.Seed);
        var detector = new FailureDetectorOptions { HeartbeatInterval = options.HeartbeatInterval, SuspectAfter = options.SuspectAfter, DeadAfter = options.DeadAfter };
        detector.DeadAfterWhenFailing = TimeSpan.FromTicks(Math.Min(detector.DeadAfterWhenFailing.Ticks, options.DeadAfter.Ticks));
        _registry = new NodeRegistry(detector, _clock);
        var policy = new MaxMinThroughputPlacementPolicy(ModelShape.FromConfig(_model, LayerMemory.PlacementBytesPerElement), new PlacementOptions());
        _control = new PlacementController(_registry, policy, _clock);
        _control.Assigned += OnAssigned;
        _router = new ShortestPathRouter(new RoutingOptions(), new PowerOfTwoChoicesPolicy(new Random(options.Seed ^ 0x5eed)));
        _candidates = new RouteCandidateIndex(_registry, _router.Options);
        int maxJobs = options.MaxConcurrentJobs > 0 ? options.MaxConcurrentJobs : options.Nodes;
        _admission = new JobAdmissionController(new JobAdmissionOptions { MaxConcurrentJobs = maxJobs, MaxQueueLength = 4 * maxJobs }, _clock);
        _end = _warmUp + TimeSpan.FromHours(options.Hours);
        _layerDownloadBytes = LayerMemory.WeightBytesPerLayer(_model, 2);
        _layerScale = (double)LayerMemory.WeightBytesPerLayer(_model, 2) / LayerMemory.WeightBytesPerLayer(Presets.Get("pythia-12b"), 2);
    }

    /// <summary>Runs the warm-up (10 simulated minutes: the initial swarm joins and loads), then <see cref="SimulationOptions.Hours"/> with jobs, then lets submitted jobs finish.</summary>
    public SimulationReport Run()
    {
        var wall = Stopwatch.StartNew();
        for (int i = 0; i < _o.Nodes; i++) _events.Schedule(TimeSpan.FromSeconds(60.0 * i / _o.Nodes), new SimEvent(SimEventKind.NodeArrival));
        _events.Schedule(Exponential(_o.MeanSessionHours * 3600 / _o.Nodes), new SimEvent(SimEventKind.NodeArrival, Version: 1));
        if (_o.JobsPerNodeHour > 0) _events.Schedule(_warmUp + Exponential(3600 / (_o.JobsPerNodeHour * _o.Nodes)), new SimEvent(SimEventKind.JobArrival));
        _events.Schedule(_o.HeartbeatInterval, new SimEvent(SimEventKind.Heartbeats));
        _events.Schedule(_o.EvaluationInterval, new SimEvent(SimEventKind.Evaluate));
        _events.Schedule(_warmUp, new SimEvent(SimEventKind.Sample));
        var drainLimit = _end + TimeSpan.FromMinutes(30);
        while (_events.TryDequeue(out var at, out var e))
        {
            if (at >= _end && _jobs.Count == 0) break;
            if (at > drainLimit) break;
            _clock.AdvanceTo(at);
            _stats.Events++;
            Dispatch(e);
        }
        return _stats.Report(_o, _online.Values.Concat(_all.Values.Where(n => !n.Online)), _clock.Elapsed, _warmUp, wall.Elapsed);
    }

    private void Dispatch(SimEvent e)
    {
        var now = _clock.Elapsed;
        switch (e.Kind)
        {
            case SimEventKind.Heartbeats:
                Heartbeats();
                _events.Schedule(now + _o.HeartbeatInterval, e);
                break;
            case SimEventKind.Evaluate:
                Evaluate();
                _events.Schedule(now + _o.EvaluationInterval, e);
                break;
            case SimEventKind.Sample:
                if (now <= _end) _stats.Sample(now - _warmUp, _registry.ServingCoverage(_model.NumLayers), _registry.Snapshot().Count(n => n.IsRoutable));
                if (now + _o.SampleInterval <= _end) _events.Schedule(now + _o.SampleInterval, e);
                break;
            case SimEventKind.NodeArrival:
                Arrive();
                // Version 1: the replacement process (rate N ÷ mean session), which keeps the swarm's size stationary.
                if (e.Version == 1 && now < _end) _events.Schedule(now + Exponential(_o.MeanSessionHours * 3600 / _o.Nodes), e);
                break;
            case SimEventKind.NodeDeparture: Depart((int)e.Id); break;
            case SimEventKind.NodeDisconnect: Disconnect((int)e.Id); break;
            case SimEventKind.RangeLoaded: RangeLoaded((int)e.Id, e.Version); break;
            case SimEventKind.JobArrival:
                Submit();
                if (now < _end) _events.Schedule(now + Exponential(3600 / (_o.JobsPerNodeHour * _o.Nodes)), e);
                break;
            case SimEventKind.JobEnd: JobEnded(e.Id, e.Version); break;
            case SimEventKind.JobCheck: JobCheck(e.Id, e.Version); break;
            case SimEventKind.JobRetryRoute: RetryRoute(e.Id, e.Version); break;
        }
    }

    private TimeSpan Exponential(double meanSeconds) => TimeSpan.FromSeconds(-Math.Log(1 - _random.NextDouble()) * meanSeconds);

    // ------------------------------------------------------------------ nodes

    private void Arrive()
    {
        var now = _clock.Elapsed;
        var node = new SimulatedNode(++_nextNodeId, MachineProfiles.Draw(_random, _layerScale), Geography.Draw(_random), now);
        _online[node.Id] = node;
        _all[node.Id] = node;
        if (now >= _warmUp) _stats.Joins++;
        _control.Join(Info(node));
        _events.Schedule(now + Exponential(_o.MeanSessionHours * 3600), new SimEvent(SimEventKind.NodeDeparture, node.Id));
    }

    private NodeInfo Info(SimulatedNode node) => new()
    {
        Id = node.Id, Name = string.Create(CultureInfo.InvariantCulture, $"sim-{node.Id}"), Endpoint = string.Create(CultureInfo.InvariantCulture, $"10.0.{node.Id / 256 % 256}.{node.Id % 256}:7701"),
        MemoryBudgetBytes = node.Machine.MemoryBytes, LayerThroughput = node.Machine.LayerTokensPerSecond, Device = node.Machine.Kind,
    };

    /// <summary>A range the controller gave a node: it loads the new layers (download time), then reports ready.</summary>
    private void OnAssigned(RangeAssignment move)
    {
        if (!_all.TryGetValue(move.NodeId, out var node)) return;
        node.Assignment++;
        double seconds = 2 + move.NewLayers * (double)_layerDownloadBytes / node.Machine.DownloadBytesPerSecond;
        _events.Schedule(_clock.Elapsed + TimeSpan.FromSeconds(seconds), new SimEvent(SimEventKind.RangeLoaded, node.Id, node.Assignment));
        if (_clock.Elapsed >= _warmUp && move.Reason != PlacementReason.Join) _stats.Moves++;
    }

    private void RangeLoaded(int id, long assignment)
    {
        if (!_online.TryGetValue(id, out var node) || node.Assignment != assignment) return;
        if (_registry.Get(id)?.Range is { } range) _control.RangeReady(id, range);
    }

    private void Depart(int id)
    {
        if (!_online.TryGetValue(id, out var node)) return;
        bool abrupt = _random.NextDouble() < _o.AbruptFraction;
        if (_clock.Elapsed >= _warmUp) { if (abrupt) _stats.AbruptDepartures++; else _stats.AnnouncedDepartures++; }
        if (abrupt)
        {
            // Gone without a word: heartbeats stop, its steps are never answered; the failure detector finds out.
            GoOffline(node);
            return;
        }
        _control.Leaving(id);
        _events.Schedule(_clock.Elapsed + _o.LeaveGrace, new SimEvent(SimEventKind.NodeDisconnect, id));
    }

    /// <summary>An announced departure's grace is over: the connection closes, the node has left, its jobs re-route now.</summary>
    private void Disconnect(int id)
    {
        if (!_online.TryGetValue(id, out var node)) return;
        GoOffline(node);
        if (_control.Disconnected(id)) Lost(id);
    }

    private void GoOffline(SimulatedNode node)
    {
        node.Online = false;
        _online.Remove(node.Id);
        foreach (long jobId in node.Jobs.ToList()) Stall(_jobs[jobId], node.Id);
    }

    /// <summary>What the coordinator does when a node is lost: re-cover its layers, tell the jobs routed through it.</summary>
    private void Lost(int id)
    {
        _control.Lost(id);
        if (!_all.TryGetValue(id, out var node)) return;
        foreach (long jobId in node.Jobs.ToList()) Recover(_jobs[jobId], id, reportFailure: false);
    }

    private void Heartbeats()
    {
        List<SimulatedNode>? reregister = null;
        foreach (var node in _online.Values)
        {
            IReadOnlyList<LinkReport>? links = null;
            if (node.LinksChanged)
            {
                links = [.. node.Links.Values.OrderBy(l => l.ToNodeId)];
                node.LinksChanged = false;
            }
            var result = _registry.Heartbeat(node.Id, node.RttToCoordinatorMs, links);
            if (result.Outcome == HeartbeatOutcome.MustRegister) (reregister ??= []).Add(node);
        }
        // Declared dead while alive (a pause longer than dead-after): the coordinator drops it and it registers again.
        foreach (var node in reregister ?? [])
        {
            _stats.FalselyDeclaredDead++;
            _online.Remove(node.Id);
            node.Id = ++_nextNodeId;
            _online[node.Id] = node;
            _all[node.Id] = node;
            _control.Join(Info(node));
        }
    }

    private void Evaluate()
    {
        var tick = _control.Tick();
        foreach (int dead in tick.Dead) Lost(dead);
        _control.Maintain();
        foreach (var started in _admission.UpdateCoverage(_registry.ServingCoverage(_model.NumLayers).Uncovered)) Admitted(started);
        foreach (var ev in _admission.Tick()) Admitted(ev);
    }
}
