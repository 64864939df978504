using Swarm.Protocol;

namespace Swarm.Coordinator.Placement;

/// <summary>A node as the planner sees it.</summary>
internal sealed record PlacementNode
{
    /// <summary>Node id.</summary>
    public required int Id { get; init; }

    /// <summary>Memory budget for weights and KV caches.</summary>
    public required long MemoryBudgetBytes { get; init; }

    /// <summary>Bytes of one layer's weights on this node (its weight format); 0: the model shape's (f32).</summary>
    public long LayerWeightBytes { get; init; }

    /// <summary>KV-cache bytes per token per layer on this node; 0: the model shape's (f32).</summary>
    public long KvBytesPerTokenPerLayer { get; init; }

    /// <summary>Tokens per second through one layer (see <c>NodeInfo.LayerThroughput</c>).</summary>
    public required double LayerThroughput { get; init; }

    /// <summary>Operator-pinned range: the planner never moves this node.</summary>
    public LayerRange? PinnedRange { get; init; }

    /// <summary>The range the node holds or is loading; null when it holds none (idle).</summary>
    public LayerRange? Range { get; init; }

    /// <summary>
    /// False for nodes whose range must not change (e.g. still loading it); an unmovable node without a range may
    /// still be given one. Pinned nodes are never moved regardless. Default true.
    /// </summary>
    public bool Movable { get; init; } = true;

    /// <summary>Jobs currently routed through the node: among equally good moves, the least busy node moves. Default 0.</summary>
    public int InFlight { get; init; }
}

/// <summary>Why an assignment was made.</summary>
internal enum PlacementReason
{
    /// <summary>A joining node's first range.</summary>
    Join,
    /// <summary>Covering layers left uncovered by a dead or departing node.</summary>
    Recover,
    /// <summary>Raising the swarm's weakest per-layer throughput.</summary>
    Rebalance,
}

/// <summary>An instruction for one node: load <paramref name="To"/> (dropping <paramref name="From"/>'s layers outside it).</summary>
/// <param name="NodeId">The node.</param>
/// <param name="From">Range it held before; null if none.</param>
/// <param name="To">Range it should hold.</param>
/// <param name="Reason">Why.</param>
internal sealed record RangeAssignment(int NodeId, LayerRange? From, LayerRange To, PlacementReason Reason)
{
    /// <summary>Layers the node has to load that it did not hold before.</summary>
    public int NewLayers => From is LayerRange f
        ? To.Count - Math.Max(0, Math.Min(f.End, To.End) - Math.Max(f.Start, To.Start))
        : To.Count;
}
