using Swarm.Coordinator.Placement;
using Swarm.Protocol;
using Xunit;

namespace Swarm.Tests.Scale;

/// <summary>
/// The pruned rebalancing search (only nodes and windows that can lift every weak layer) decides exactly as the exhaustive
/// one it replaced: every movable node's best window, kept only if it raises the weakest layer by the factor.
/// </summary>
public class RebalanceSearchTests
{
    private const int Layers = 24;
    private const long LayerBytes = 1000;
    private const double Factor = 1.2;

    private static MaxMinThroughputPlacementPolicy Policy() =>
        new(new ModelShape(Layers, LayerBytes, 1), new PlacementOptions { KvReserveTokens = 100, RebalanceImprovementFactor = Factor });

    [Fact]
    public void PrunedRebalance_ChoosesTheSameMoveAsTheExhaustiveSearch_OnRandomSwarms()
    {
        var policy = Policy();
        int moves = 0;
        for (int seed = 0; seed < 300; seed++)
        {
            var swarm = RandomSwarm(policy, new Random(seed));
            var expected = Exhaustive(policy, swarm);
            var actual = policy.Rebalance(swarm);
            Assert.Equal(expected, actual);
            if (expected is not null) moves++;
        }
        Assert.InRange(moves, 10, 290); // the swarms are varied enough that both outcomes are exercised
    }

    /// <summary>A swarm where every layer is covered but unevenly: nodes of 2–12 layers at random starts and speeds.</summary>
    private static List<PlacementNode> RandomSwarm(MaxMinThroughputPlacementPolicy policy, Random random)
    {
        var swarm = new List<PlacementNode>();
        for (int start = 0, id = 1; start < Layers; id++)
        {
            int fit = random.Next(2, 13);
            var range = new LayerRange(Math.Min(start, Layers - fit), Math.Min(start, Layers - fit) + fit);
            swarm.Add(Node(id, fit, random.Next(50, 400), range));
            start = range.End;
        }
        int extra = random.Next(1, 12);
        for (int i = 0; i < extra; i++)
        {
            int fit = random.Next(2, 13), s = random.Next(0, Layers - fit + 1);
            swarm.Add(Node(swarm.Count + 1, fit, random.Next(50, 400), new LayerRange(s, s + fit)));
        }
        return swarm;
    }

    private static PlacementNode Node(int id, int fit, double tp, LayerRange range) => new()
    {
        Id = id, MemoryBudgetBytes = fit * 1100 + 50, LayerThroughput = tp, Range = range, Movable = true,
    };

    /// <summary>The search as it was: for every movable node, its best window over all starts; the best passing move wins.</summary>
    private static RangeAssignment? Exhaustive(MaxMinThroughputPlacementPolicy policy, List<PlacementNode> swarm)
    {
        var now = Throughputs(swarm, except: null);
        if (now.Any(v => v <= 0)) return null;
        double currentMin = now.Min();
        (PlacementNode Node, LayerRange Range, double[] Sorted)? best = null;
        foreach (var n in swarm.OrderBy(n => n.Id))
        {
            if (!n.Movable || n.Range is not LayerRange held) continue;
            int k = policy.Capacity(n);
            var without = Throughputs(swarm, except: n.Id);
            LayerRange r = new(0, k);
            double[]? rSorted = null;
            int rFragments = 0;
            for (int s = 0; s + k <= Layers; s++)
            {
                var after = Add(without, new LayerRange(s, s + k), n.LayerThroughput / k);
                var sorted = after.Order().ToArray();
                int fragments = Fragments(after);
                int cmp = rSorted is null ? 1 : Compare(sorted, rSorted);
                if (cmp > 0 || (cmp == 0 && fragments < rFragments)) (r, rSorted, rFragments) = (new LayerRange(s, s + k), sorted, fragments);
            }
            if (r == held) continue;
            var moved = Add(without, r, n.LayerThroughput / k);
            if (moved.Any(v => v <= 0) || moved.Min() < currentMin * Factor) continue;
            var c = (n, r, moved.Order().ToArray());
            int vs = best is null ? 1 : Compare(c.Item3, best.Value.Sorted);
            if (vs > 0 || (vs == 0 && n.InFlight < best!.Value.Node.InFlight)) best = c;
        }
        return best is { } b ? new RangeAssignment(b.Node.Id, b.Node.Range, b.Range, PlacementReason.Rebalance) : null;
    }

    private static double[] Throughputs(List<PlacementNode> swarm, int? except)
    {
        var t = new double[Layers];
        foreach (var n in swarm)
            if (n.Id != except && n.Range is LayerRange r)
                for (int l = r.Start; l < r.End; l++) t[l] += n.LayerThroughput / r.Count;
        return t;
    }

    private static double[] Add(double[] t, LayerRange r, double per)
    {
        var a = (double[])t.Clone();
        for (int l = r.Start; l < r.End; l++) a[l] += per;
        return a;
    }

    private static int Fragments(double[] t) => Enumerable.Range(0, t.Length).Count(l => t[l] <= 0 && (l == 0 || t[l - 1] > 0));

    private static int Compare(double[] a, double[] b)
    {
        for (int i = 0; i < a.Length; i++)
        {
            double tol = 1e-9 * Math.Max(Math.Abs(a[i]), Math.Abs(b[i]));
            if (a[i] > b[i] + tol) return 1;
            if (a[i] < b[i] - tol) return -1;
        }
        return 0;
    }
}
