using System.Diagnostics;
using Swarm.Coordinator.Placement;
using Swarm.Model;

namespace Swarm.Cli.Bench.Capacity;

/// <summary>
/// Times the coordinator's placement policy (the real <see cref="MaxMinThroughputPlacementPolicy"/>, in this process) on a
/// swarm of N nodes like the bench's: a join (<see cref="IPlacementPolicy.ChooseJoinRange"/>), the recovery after a node
/// is lost (<see cref="IPlacementPolicy.Recover"/>), and one rebalancing check (<see cref="IPlacementPolicy.Rebalance"/>),
/// each the median of several runs.
/// </summary>
internal static class PlacementTiming
{
    /// <summary>Milliseconds per call.</summary>
    public sealed record Figures(double JoinMs, double RecoverMs, double RebalanceMs);

    /// <summary>Places <paramref name="n"/> nodes one join at a time, then times the three decisions.</summary>
    public static Figures Measure(ModelConfig cfg, int n, FakeNodeProfile profile)
    {
        var policy = new MaxMinThroughputPlacementPolicy(ModelShape.FromConfig(cfg, LayerMemory.PlacementBytesPerElement), new PlacementOptions());
        var swarm = new List<PlacementNode>(n);
        for (int i = 0; i < n; i++)
        {
            // Throughputs spread ±50 % so the weakest layer is not a tie everywhere.
            var node = new PlacementNode
            {
                Id = i + 1, MemoryBudgetBytes = profile.MemoryBudgetBytes, LayerWeightBytes = profile.LayerWeightBytes,
                KvBytesPerTokenPerLayer = profile.KvBytesPerTokenPerLayer, LayerThroughput = profile.LayerTokensPerSecond * (0.5 + (i * 37 % 101) / 100.0),
            };
            swarm.Add(node with { Range = policy.ChooseJoinRange(swarm, node) });
        }
        var joining = swarm[0] with { Id = n + 1, Range = null };
        double join = Median(() => policy.ChooseJoinRange(swarm, joining));
        // A lost node: its replicas' layers may stay covered; with few nodes they do not, and recovery moves someone.
        var withoutFirst = swarm.Skip(1).ToList();
        double recover = Median(() => policy.Recover(withoutFirst));
        double rebalance = Median(() => policy.Rebalance(swarm));
        return new Figures(join, recover, rebalance);
    }

    private static double Median(Func<object?> decide)
    {
        var times = new double[7];
        for (int i = 0; i < times.Length; i++)
        {
            var sw = Stopwatch.StartNew();
            GC.KeepAlive(decide());
            times[i] = sw.Elapsed.TotalMilliseconds;
        }
        Array.Sort(times);
        return times[times.Length / 2];
    }
}
