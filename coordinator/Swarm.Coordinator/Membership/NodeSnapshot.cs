using Swarm.Coordinator.Placement;
using Swarm.Protocol;

namespace Swarm.Coordinator.Membership;

/// <summary>
/// View of one node at one moment; the registry swaps in a new one on every change — except the liveness figures
/// (<see cref="LastHeartbeat"/>, <see cref="RttMs"/>), which live in the incarnation's shared <see cref="NodePulse"/> and
/// always read the latest heartbeat.
/// </summary>
internal sealed record NodeSnapshot
{
    /// <summary>What the node announced.</summary>
    public required NodeInfo Info { get; init; }

    /// <summary>Lifecycle phase.</summary>
    public required NodePhase Phase { get; init; }

    /// <summary>Failure detector's verdict.</summary>
    public NodeHealth Health { get; init; } = NodeHealth.Alive;

    /// <summary>Range the node holds or is loading; null while it holds none.</summary>
    public LayerRange? Range { get; init; }

    /// <summary>
    /// While a serving node loads another range (a move): the range it still serves until the new one is ready, so
    /// its layers stay routable without a gap. Null otherwise.
    /// </summary>
    public LayerRange? ServedRange { get; init; }

    /// <summary>The range jobs may be routed through now: <see cref="Range"/> when serving, <see cref="ServedRange"/> during a move, else null.</summary>
    public LayerRange? RoutableRange => Health == NodeHealth.Dead ? null
        : Phase == NodePhase.Serving ? Range
        : Phase == NodePhase.Loading ? ServedRange
        : null;

    /// <summary>Jobs currently routed through this node (maintained by the coordinator).</summary>
    public int InFlight { get; init; }

    /// <summary>When the node registered.</summary>
    public required DateTimeOffset JoinedAt { get; init; }

    /// <summary>The incarnation's liveness figures, shared by all its snapshots (a fresh registration gets a fresh one).</summary>
    public NodePulse Pulse { get; init; } = new();

    /// <summary>When the last heartbeat (or the registration) arrived (read from <see cref="Pulse"/>: always the latest).</summary>
    public required DateTimeOffset LastHeartbeat { get => Pulse.LastHeartbeat; init => Pulse.LastHeartbeat = value; }

    /// <summary>Smoothed coordinator↔node round-trip time in milliseconds, if measured (read from <see cref="Pulse"/>).</summary>
    public double? RttMs { get => Pulse.RttMs; init => Pulse.RttMs = value; }

    /// <summary>The node's links to the next hops it handed steps to, as its last heartbeat reported them.</summary>
    public IReadOnlyList<LinkReport> Links { get; init; } = [];

    /// <summary>
    /// <see cref="Links"/> by receiving node id, built once when a heartbeat brings links (the router reads it for every
    /// candidate of every route; building it there cost O(nodes × links) per job).
    /// </summary>
    public IReadOnlyDictionary<int, LinkReport> LinksByNode { get; init; } = NoLinks;

    private static readonly IReadOnlyDictionary<int, LinkReport> NoLinks = new Dictionary<int, LinkReport>();

    /// <summary>Indexes links by receiving node (the last report of a node wins).</summary>
    internal static IReadOnlyDictionary<int, LinkReport> Index(IReadOnlyList<LinkReport> links)
    {
        if (links.Count == 0) return NoLinks;
        var byNode = new Dictionary<int, LinkReport>(links.Count);
        foreach (var l in links) byNode[l.ToNodeId] = l;
        return byNode;
    }

    /// <summary>Times of failed requests reported since the last success, oldest first.</summary>
    public IReadOnlyList<DateTimeOffset> RecentFailures { get; init; } = [];

    /// <summary>True once a spot check caught the node returning wrong results (terminal for this incarnation).</summary>
    public bool Banned { get; init; }

    /// <summary>Spot checks the node passed.</summary>
    public int ChecksPassed { get; init; }

    /// <summary>Spot checks the node failed (it disagreed with the majority of the replicas that ran the same step).</summary>
    public int ChecksFailed { get; init; }

    /// <summary>When the node last passed a spot check (its join time before any).</summary>
    public DateTimeOffset? LastPassedCheck { get; init; }

    /// <summary>Id shortcut for <c>Info.Id</c>.</summary>
    public int Id => Info.Id;

    /// <summary>The combined state shown to operators.</summary>
    public NodeStatus State => Banned ? NodeStatus.Banned : Phase == NodePhase.Left ? NodeStatus.Left
        : Health switch
        {
            NodeHealth.Dead => NodeStatus.Dead,
            NodeHealth.Suspect => NodeStatus.Suspect,
            _ => Phase switch
            {
                NodePhase.Joining => NodeStatus.Joining,
                NodePhase.Loading => NodeStatus.Loading,
                NodePhase.Serving => NodeStatus.Serving,
                _ => NodeStatus.Draining,
            },
        };

    /// <summary>
    /// True when the node's range counts toward coverage for placement decisions: it is loading or
    /// serving and not dead. Draining nodes do not count, so their layers get re-covered before they go.
    /// </summary>
    public bool CountsForPlacement => !Banned && Health != NodeHealth.Dead && Phase is NodePhase.Loading or NodePhase.Serving;

    /// <summary>
    /// True when jobs may be routed through the node (through its <see cref="RoutableRange"/>): serving, or loading a
    /// new range while still serving its old one, and not dead (suspects at a penalty).
    /// </summary>
    public bool IsRoutable => !Banned && RoutableRange is not null;

    /// <summary>
    /// True when the planner may give the node a range or count the one it has: not dead, and joining, loading or
    /// serving (draining and departed nodes are left out so their layers get re-covered).
    /// </summary>
    public bool IsPlacementCandidate => !Banned && Health != NodeHealth.Dead && Phase is NodePhase.Joining or NodePhase.Loading or NodePhase.Serving;

    /// <summary>The node as the placement planner sees it; only serving nodes may be moved by rebalancing.</summary>
    public PlacementNode ToPlacementNode() => new()
    {
        Id = Info.Id,
        MemoryBudgetBytes = Info.MemoryBudgetBytes,
        LayerWeightBytes = Info.LayerWeightBytes,
        KvBytesPerTokenPerLayer = Info.KvBytesPerTokenPerLayer,
        LayerThroughput = Info.LayerThroughput,
        PinnedRange = Info.PinnedRange,
        Range = CountsForPlacement ? Range : null,
        Movable = Phase == NodePhase.Serving,
        InFlight = InFlight,
    };
}

/// <summary>A change of a node's state, reported so the service can log it and react (re-cover on death).</summary>
/// <param name="Before">The node before the change.</param>
/// <param name="After">The node after the change.</param>
internal sealed record NodeTransition(NodeSnapshot Before, NodeSnapshot After)
{
    /// <summary>True when this transition confirmed the node dead.</summary>
    public bool BecameDead => Before.Health != NodeHealth.Dead && After.Health == NodeHealth.Dead;
}
