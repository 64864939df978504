using System.Collections.Immutable;
using Swarm.Coordinator.Placement;
using Swarm.Protocol;

namespace Swarm.Coordinator.Membership;

/// <summary>Result of a heartbeat.</summary>
internal enum HeartbeatOutcome
{
    /// <summary>Recorded.</summary>
    Accepted,
    /// <summary>The id is unknown, dead or has left: the node must register again.</summary>
    MustRegister,
}

/// <summary>What a heartbeat did.</summary>
/// <param name="Outcome">Whether it was recorded.</param>
/// <param name="Transition">The health change it caused (Suspect → Alive), if any.</param>
internal readonly record struct HeartbeatResult(HeartbeatOutcome Outcome, NodeTransition? Transition);

/// <summary>
/// The coordinator's membership table: immutable <see cref="NodeSnapshot"/>s swapped under a lock, so
/// readers get a consistent <see cref="Snapshot"/> without locking. I/O-free: the service feeds it
/// registrations, heartbeats and request outcomes, and calls <see cref="Evaluate"/> on a timer.
/// </summary>
internal sealed class NodeRegistry
{
    private readonly object _gate = new();
    private readonly IFailureDetector _detector;
    private readonly FailureDetectorOptions _options;
    private readonly TimeProvider _time;
    private ImmutableSortedDictionary<int, NodeSnapshot> _nodes = ImmutableSortedDictionary<int, NodeSnapshot>.Empty;

    /// <summary>Creates a registry.</summary>
    /// <param name="options">Failure detection timing; validated here.</param>
    /// <param name="time">Clock (a fake one in tests).</param>
    /// <param name="detector">Detector; defaults to <see cref="MissedHeartbeatFailureDetector"/> with <paramref name="options"/>.</param>
    /// <exception cref="ArgumentException">The options are invalid.</exception>
    public NodeRegistry(FailureDetectorOptions options, TimeProvider time, IFailureDetector? detector = null)
    {
        options.ThrowIfInvalid();
        _options = options;
        _time = time;
        _detector = detector ?? new MissedHeartbeatFailureDetector(options);
    }

    /// <summary>The detector in use.</summary>
    public IFailureDetector Detector => _detector;

    /// <summary>What was derived from one version of the table (the table is replaced on every change, so a reference check tells whether it is current).</summary>
    private sealed record Derived(ImmutableSortedDictionary<int, NodeSnapshot> Table, IReadOnlyList<NodeSnapshot> Nodes)
    {
        public IReadOnlyList<PlacementNode>? PlacementView { get; set; }
    }

    private Derived? _derived;

    /// <summary>The serving coverage and the <see cref="_coverageVersion"/> it was computed at.</summary>
    private sealed record CoverageAt(long Version, int Layers, CoverageReport Report);

    /// <summary>
    /// Bumped by every change that can alter <see cref="ServingCoverage"/> (a node becoming or ceasing to be routable, its
    /// routable range or throughput changing): the coverage is recomputed only then, not on the far more frequent
    /// in-flight counts and health flickers that also replace the table.
    /// </summary>
    private long _coverageVersion;
    private CoverageAt? _coverage;

    /// <summary>
    /// The views of the current table, built at most once per table version: heartbeats no longer replace the table, so
    /// the evaluation tick, admission and routing read the same lists until membership really changes.
    /// </summary>
    private Derived Current()
    {
        var table = Volatile.Read(ref _nodes);
        var derived = Volatile.Read(ref _derived);
        if (derived is not null && ReferenceEquals(derived.Table, table)) return derived;
        derived = new Derived(table, [.. table.Values]);
        Volatile.Write(ref _derived, derived);
        return derived;
    }

    /// <summary>All known nodes (including dead and departed ones until <see cref="Remove"/>), ordered by id.</summary>
    public IReadOnlyList<NodeSnapshot> Snapshot() => Current().Nodes;

    /// <summary>The placement planner's input: every <see cref="NodeSnapshot.IsPlacementCandidate"/> node.</summary>
    public IReadOnlyList<PlacementNode> PlacementView()
    {
        var derived = Current();
        return derived.PlacementView ??= [.. derived.Nodes.Where(n => n.IsPlacementCandidate).Select(n => n.ToPlacementNode())];
    }

    /// <summary>
    /// Coverage by nodes that can take jobs now (<see cref="NodeSnapshot.IsRoutable"/>): what admission and the
    /// 503 message use. Loading nodes do not count yet.
    /// </summary>
    public CoverageReport ServingCoverage(int numLayers)
    {
        long version = Interlocked.Read(ref _coverageVersion); // read before the table: a change in between only forces a recount
        if (Volatile.Read(ref _coverage) is { } c && c.Version == version && c.Layers == numLayers) return c.Report;
        var table = Volatile.Read(ref _nodes);
        var report = CoverageReport.Of(numLayers, table.Values.Where(n => n.IsRoutable).Select(n => n.ToPlacementNode() with { Range = n.RoutableRange }));
        Volatile.Write(ref _coverage, new CoverageAt(version, numLayers, report));
        return report;
    }

    /// <summary>The node with this id, or null.</summary>
    public NodeSnapshot? Get(int id) => Volatile.Read(ref _nodes).GetValueOrDefault(id);

    /// <summary>
    /// Registers a node. A node reconnecting after a coordinator restart passes the range it already holds
    /// as <paramref name="heldRange"/> and is Serving at once; otherwise it starts Joining. Registering an id
    /// that is dead or has left starts a fresh incarnation; registering a live id again updates its info.
    /// </summary>
    public NodeSnapshot Register(NodeInfo info, LayerRange? heldRange = null)
    {
        ArgumentNullException.ThrowIfNull(info);
        if (info.MemoryBudgetBytes < 0) throw new ArgumentOutOfRangeException(nameof(info), "memory budget must not be negative");
        if (!(info.LayerThroughput > 0)) throw new ArgumentOutOfRangeException(nameof(info), "layer throughput must be positive");
        var now = _time.GetUtcNow();
        lock (_gate)
        {
            var existing = _nodes.GetValueOrDefault(info.Id);
            NodeSnapshot node;
            if (existing is null || existing.Health == NodeHealth.Dead || existing.Phase == NodePhase.Left)
            {
                node = new NodeSnapshot
                {
                    Info = info,
                    Phase = heldRange is null ? NodePhase.Joining : NodePhase.Serving,
                    Range = heldRange,
                    JoinedAt = now,
                    LastHeartbeat = now,
                };
            }
            else
            {
                node = existing with
                {
                    Info = info,
                    LastHeartbeat = now,
                    Health = NodeHealth.Alive,
                    Range = heldRange ?? existing.Range,
                    Phase = heldRange is null ? existing.Phase : NodePhase.Serving,
                };
            }
            Put(existing, node);
            return node;
        }
    }

    /// <summary>Records a heartbeat; a suspect node becomes alive again. Dead and unknown nodes must register.</summary>
    /// <param name="id">Node id.</param>
    /// <param name="rttMs">A fresh round-trip measurement, folded into the smoothed RTT.</param>
    /// <param name="links">The node's measured links to its next hops (<see cref="Swarm.Protocol.Heartbeat.Links"/>); null keeps the last ones.</param>
    /// <remarks>
    /// O(1) and allocation-free for the common heartbeat (alive before and after, no links): the time and RTT are written
    /// into the node's <see cref="NodePulse"/>; the membership table is swapped only when health or links change.
    /// </remarks>
    public HeartbeatResult Heartbeat(int id, double? rttMs = null, IReadOnlyList<LinkReport>? links = null)
    {
        var now = _time.GetUtcNow();
        lock (_gate)
        {
            var n = _nodes.GetValueOrDefault(id);
            if (n is null || n.Health == NodeHealth.Dead || n.Phase == NodePhase.Left) return new HeartbeatResult(HeartbeatOutcome.MustRegister, null);
            double? rttBefore = n.Pulse.RttMs;
            if (rttMs is double sample && sample >= 0)
                n.Pulse.RttMs = n.Pulse.RttMs is double old ? old + _options.RttSmoothing * (sample - old) : sample;
            n.Pulse.LastHeartbeat = now;
            var health = _detector.Evaluate(Liveness(n, now), now);
            if (health == n.Health && links is null)
            {
                if (n.Pulse.RttMs != rttBefore) Notify(n, n); // the RTT changed in place: observers that rank by it look again
                return new HeartbeatResult(HeartbeatOutcome.Accepted, null);
            }
            var updated = links is null ? n with { Health = health }
                : n with { Health = health, Links = links, LinksByNode = NodeSnapshot.Index(links) };
            Put(n, updated);
            return new HeartbeatResult(HeartbeatOutcome.Accepted, updated.Health != n.Health ? new NodeTransition(n, updated) : null);
        }
    }

    /// <summary>
    /// Gives a node a range to load (phase Loading). A node moved away from a range it serves keeps serving that range
    /// (<see cref="NodeSnapshot.ServedRange"/>) until it reports the new one ready. Returns the updated node, or null if unknown.
    /// </summary>
    public NodeSnapshot? AssignRange(int id, LayerRange range) =>
        Update(id, n => n.Health == NodeHealth.Dead || n.Phase is NodePhase.Left or NodePhase.Draining
            ? n
            : n with { Range = range, Phase = NodePhase.Loading, ServedRange = n.RoutableRange is { } old && old != range ? old : null });

    /// <summary>The node finished loading its range (phase Serving); the range it served during a move is dropped.</summary>
    public NodeSnapshot? MarkServing(int id) =>
        Update(id, n => n.Phase == NodePhase.Loading || (n.Phase == NodePhase.Joining && n.Range is not null)
            ? n with { Phase = NodePhase.Serving, ServedRange = null }
            : n);

    /// <summary>Records a node's self-benchmark measured after registration (a node that learned the model's shape only then).</summary>
    public NodeSnapshot? UpdateThroughput(int id, double layerThroughput) =>
        layerThroughput > 0 && double.IsFinite(layerThroughput)
            ? Update(id, n => n.Info.LayerThroughput == layerThroughput ? n : n with { Info = n.Info with { LayerThroughput = layerThroughput } })
            : Get(id);

    /// <summary>The node asked to leave: it receives no new jobs but still counts as alive.</summary>
    public NodeSnapshot? BeginDrain(int id) =>
        Update(id, n => n.Phase == NodePhase.Left ? n : n with { Phase = NodePhase.Draining });

    /// <summary>The node has left gracefully.</summary>
    public NodeSnapshot? MarkLeft(int id) => Update(id, n => n with { Phase = NodePhase.Left, InFlight = 0 });

    /// <summary>Forgets a node entirely (e.g. some time after it died or left).</summary>
    public bool Remove(int id)
    {
        lock (_gate)
        {
            if (_nodes.GetValueOrDefault(id) is not { } n) return false;
            _nodes = _nodes.Remove(id);
            Notify(n, null);
            return true;
        }
    }

    /// <summary>Counts a spot check the node passed or failed.</summary>
    /// <param name="id">The node.</param>
    /// <param name="passed">Whether it passed.</param>
    /// <param name="stepAt">
    /// When the checked step was answered (default now): a pass vouches for the node's results up to then, so
    /// <see cref="NodeSnapshot.LastPassedCheck"/> becomes the later of it and the one before (checks are judged after
    /// their steps, not necessarily in order).
    /// </param>
    public NodeSnapshot? RecordCheck(int id, bool passed, DateTimeOffset? stepAt = null)
    {
        var at = stepAt ?? _time.GetUtcNow();
        return Update(id, n => passed
            ? n with { ChecksPassed = n.ChecksPassed + 1, LastPassedCheck = n.LastPassedCheck is { } before && before > at ? before : at }
            : n with { ChecksFailed = n.ChecksFailed + 1 });
    }

    /// <summary>Bans the node (state <see cref="NodeStatus.Banned"/>: no longer routable nor placed); null when unknown.</summary>
    public NodeSnapshot? Ban(int id) => Update(id, n => n.Banned ? n : n with { Banned = true, InFlight = 0 });

    /// <summary>Adds <paramref name="delta"/> to the node's in-flight job count (never below zero).</summary>
    public NodeSnapshot? AdjustInFlight(int id, int delta) =>
        Update(id, n => n with { InFlight = Math.Max(0, n.InFlight + delta) });

    /// <summary>
    /// A request to the node failed (timeout, refused, error reply). Accelerates suspicion; returns the
    /// transition when the node's health changed because of it.
    /// </summary>
    public NodeTransition? ReportFailure(int id)
    {
        var now = _time.GetUtcNow();
        lock (_gate)
        {
            var n = _nodes.GetValueOrDefault(id);
            if (n is null || n.Health == NodeHealth.Dead) return null;
            var failures = n.RecentFailures.Where(t => now - t < _options.FailureWindow).Append(now).ToArray();
            var updated = n with { RecentFailures = failures };
            updated = updated with { Health = _detector.Evaluate(Liveness(updated, now), now) };
            Put(n, updated);
            return updated.Health != n.Health ? new NodeTransition(n, updated) : null;
        }
    }

    /// <summary>A request to the node succeeded: its failure record is cleared.</summary>
    public NodeSnapshot? ReportSuccess(int id)
    {
        var now = _time.GetUtcNow();
        return Update(id, n =>
        {
            if (n.Health == NodeHealth.Dead || n.RecentFailures.Count == 0) return n;
            var cleared = n with { RecentFailures = [] };
            return cleared with { Health = _detector.Evaluate(Liveness(cleared, now), now) };
        });
    }

    /// <summary>
    /// Runs the failure detector over every member; returns the health changes (in id order). Call it every
    /// <see cref="FailureDetectorOptions.EvaluationInterval"/>.
    /// </summary>
    public IReadOnlyList<NodeTransition> Evaluate()
    {
        var now = _time.GetUtcNow();
        lock (_gate)
        {
            var changes = new List<NodeTransition>();
            List<(NodeSnapshot Before, NodeSnapshot After)>? updates = null; // most ticks change nothing: then the table stays the same object
            foreach (var n in _nodes.Values)
            {
                if (n.Health == NodeHealth.Dead || n.Phase == NodePhase.Left) continue;
                // Most nodes have no failures on record: no allocation for them (this runs for every node every 250 ms).
                var pruned = n;
                if (n.RecentFailures.Count > 0)
                {
                    var failures = n.RecentFailures.Where(t => now - t < _options.FailureWindow).ToArray();
                    if (failures.Length != n.RecentFailures.Count) pruned = n with { RecentFailures = failures };
                }
                var health = _detector.Evaluate(Liveness(pruned, now), now);
                var updated = health == pruned.Health ? pruned : pruned with { Health = health };
                if (!ReferenceEquals(updated, n)) (updates ??= []).Add((n, updated));
                if (updated.Health != n.Health) changes.Add(new NodeTransition(n, updated));
            }
            if (updates is not null)
            {
                _nodes = _nodes.SetItems(updates.Select(u => KeyValuePair.Create(u.After.Id, u.After)));
                foreach (var (before, after) in updates) Notify(before, after);
            }
            return changes;
        }
    }

    private NodeSnapshot? Update(int id, Func<NodeSnapshot, NodeSnapshot> change)
    {
        lock (_gate)
        {
            var n = _nodes.GetValueOrDefault(id);
            if (n is null) return null;
            var updated = change(n);
            if (!ReferenceEquals(updated, n)) Put(n, updated);
            return updated;
        }
    }

    /// <summary>
    /// Calls <paramref name="changed"/> with every node now in the table as <c>(null, node)</c>, then, under the registry's
    /// lock, with every change from here on: <c>(before, after)</c> for a new version (before null for a new id, after null
    /// for a removed one), and <c>(node, node)</c> when a heartbeat updated its round trip in place. For structures kept up
    /// to date incrementally (<see cref="Routing.RouteCandidateIndex"/>) instead of rebuilt from <see cref="Snapshot"/>; the
    /// callback must be quick and must not call back into the registry's writers.
    /// </summary>
    public void Observe(Action<NodeSnapshot?, NodeSnapshot?> changed)
    {
        ArgumentNullException.ThrowIfNull(changed);
        lock (_gate)
        {
            foreach (var n in _nodes.Values) changed(null, n);
            _observers = [.. _observers, changed];
        }
    }

    private Action<NodeSnapshot?, NodeSnapshot?>[] _observers = [];

    /// <summary>Replaces <paramref name="before"/> (null: a new id) by <paramref name="after"/> in the table and tells the observers; under the lock.</summary>
    private void Put(NodeSnapshot? before, NodeSnapshot after)
    {
        _nodes = _nodes.SetItem(after.Id, after);
        Notify(before, after);
    }

    private void Notify(NodeSnapshot? before, NodeSnapshot? after)
    {
        if (before is null || after is null ? (before ?? after)!.IsRoutable
            : before.IsRoutable != after.IsRoutable || before.RoutableRange != after.RoutableRange || before.Info.LayerThroughput != after.Info.LayerThroughput)
            Interlocked.Increment(ref _coverageVersion);
        foreach (var o in _observers) o(before, after);
    }

    private NodeLiveness Liveness(NodeSnapshot n, DateTimeOffset now)
    {
        if (n.RecentFailures.Count == 0) return new NodeLiveness(n.LastHeartbeat, 0, 0);
        var inWindow = n.RecentFailures.Where(t => now - t < _options.FailureWindow).ToArray();
        return new NodeLiveness(n.LastHeartbeat, inWindow.Length, inWindow.Count(t => t > n.LastHeartbeat));
    }
}
