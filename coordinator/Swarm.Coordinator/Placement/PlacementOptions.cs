namespace Swarm.Coordinator.Placement;

/// <summary>Tuning of the placement planner.</summary>
public sealed class PlacementOptions
{
    /// <summary>
    /// KV-cache tokens to reserve per hosted layer when deciding how many layers fit in a node's memory
    /// (summed over concurrent sessions). Default 8192 (four 2048-token sessions).
    /// </summary>
    public int KvReserveTokens { get; set; } = Swarm.Model.LayerMemory.KvReserveTokens;

    /// <summary>
    /// Hysteresis of rebalancing: a node is moved only if the swarm's minimum per-layer throughput grows by
    /// at least this factor. Default 1.2. Must be greater than 1, or moves could flap.
    /// </summary>
    public double RebalanceImprovementFactor { get; set; } = 1.2;

    /// <summary>
    /// Upper bound on moves one <see cref="IPlacementPolicy.Recover"/> call proposes. Default 64.
    /// </summary>
    public int MaxRecoveryMoves { get; set; } = 64;

    /// <summary>Returns every problem with these options (empty when valid).</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (KvReserveTokens < 0) errors.Add($"{nameof(KvReserveTokens)} must not be negative");
        if (!(RebalanceImprovementFactor > 1)) errors.Add($"{nameof(RebalanceImprovementFactor)} must be greater than 1");
        if (MaxRecoveryMoves < 1) errors.Add($"{nameof(MaxRecoveryMoves)} must be at least 1");
        return errors;
    }
}
