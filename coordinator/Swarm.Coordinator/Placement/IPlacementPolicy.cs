using Swarm.Protocol;

namespace Swarm.Coordinator.Placement;

/// <summary>
/// Decides which contiguous layer range each node holds. Pure: callers pass the current layout (nodes with
/// their ranges) and apply the returned assignments themselves.
/// </summary>
internal interface IPlacementPolicy
{
    /// <summary>Name used in configuration and logs.</summary>
    string Name { get; }

    /// <summary>The model being placed.</summary>
    ModelShape Shape { get; }

    /// <summary>How many layers the node can hold (its pinned range's length if pinned); 0 if none fit.</summary>
    int Capacity(PlacementNode node);

    /// <summary>
    /// The range a joining node should load, given the other nodes' current ranges: its pinned range if it has
    /// one, else <see cref="Capacity"/> layers where they raise the swarm's weakest layer most.
    /// Null when the node cannot hold even one layer or its pinned range lies outside the model.
    /// </summary>
    LayerRange? ChooseJoinRange(IReadOnlyList<PlacementNode> swarm, PlacementNode joining);

    /// <summary>
    /// Moves that cover uncovered layers: idle nodes take a range, nodes with spare memory extend theirs,
    /// replicas whose layers stay covered move (never pinned nodes, nor unmovable ones that hold a range). Each move strictly reduces the number of uncovered layers;
    /// empty when nothing helps (or nothing is uncovered). At most one assignment per node.
    /// </summary>
    IReadOnlyList<RangeAssignment> Recover(IReadOnlyList<PlacementNode> swarm);

    /// <summary>
    /// One move that raises the minimum per-layer throughput by at least the configured factor while keeping
    /// every layer covered, or null. Hysteresis: applying the result and calling again never moves back.
    /// </summary>
    RangeAssignment? Rebalance(IReadOnlyList<PlacementNode> swarm);

    /// <summary>
    /// Places every node that has no range (largest capacity first, as if they joined in that order) and then
    /// recovers; the initial plan when several nodes are present at start-up.
    /// </summary>
    IReadOnlyList<RangeAssignment> PlaceAll(IReadOnlyList<PlacementNode> swarm);
}
