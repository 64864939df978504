using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Routing;
using Swarm.Protocol;
using Xunit;

namespace Swarm.Tests.Coordinator;

public class RoutingTests
{
    // Node ids, numbered in the alphabetical order of their names (placement and routing break ties by id).
    private const int A = 1, A1 = 2, A2 = 3, A3 = 4, B = 5, B1 = 6, B2 = 7, C = 8, D = 9, Draining = 10, Far = 11, Fast = 12, Joining = 13, Loading = 14, S = 15, Serving = 16, Slow = 17, Spare = 18, Suspect = 19, X = 20, Y = 21, Zzz = 22;

    private static RouteCandidate Cand(int id, int start, int end, double tp = 1000, double rtt = 1, int inFlight = 0, bool suspect = false) => new()
    {
        NodeId = id, Range = new LayerRange(start, end), LayerThroughput = tp, RttMs = rtt, InFlight = inFlight, Suspect = suspect,
    };

    private static ShortestPathRouter Router(ILoadBalancingPolicy? lb = null, RoutingOptions? o = null) =>
        new(o ?? new RoutingOptions(), lb ?? new PowerOfTwoChoicesPolicy(new Random(42)));

    private static string Describe(RoutingResult r) => r.Route!.ToString();

    private static void AssertChain(Route route, int start, int end)
    {
        Assert.Equal(start, route.Hops[0].Layers.Start);
        for (int i = 1; i < route.Hops.Count; i++) Assert.Equal(route.Hops[i - 1].Layers.End, route.Hops[i].Layers.Start);
        Assert.Equal(end, route.Hops[^1].Layers.End);
    }

    private static RouteCandidate WithLinks(RouteCandidate c, params (int To, HopPath Path, double RttMs)[] links) => c with
    {
        Links = links.ToDictionary(l => l.To, l => new LinkReport { ToNodeId = l.To, Path = l.Path, RttMs = l.RttMs }),
    };

    [Fact]
    public void Route_MeasuredLinks_ChooseTheReplicaTheFirstStageReachesFastest()
    {
        // B and B2 hold the second half; both are 20 ms from the coordinator, so unmeasured they tie (lower id wins).
        RouteCandidate[] unmeasured = [Cand(A, 0, 6, rtt: 2), Cand(B, 6, 12, rtt: 20), Cand(B2, 6, 12, rtt: 20)];
        var plain = Router(new LeastInFlightPolicy()).Route(12, unmeasured);
        Assert.Equal($"{A}[0:6) → {B}[6:12)", Describe(plain));

        // A measured its links: B is 40 ms away from it, B2 1 ms (same LAN). The hop's own latency decides.
        RouteCandidate[] measured = [WithLinks(unmeasured[0], (B, HopPath.Direct, 40), (B2, HopPath.Direct, 1)), unmeasured[1], unmeasured[2]];
        var r = Router(new LeastInFlightPolicy()).Route(12, measured);
        Assert.Equal($"{A}[0:6) → {B2}[6:12)", Describe(r));
        // Cost: 2 ms to A + 6 ms of layers + the 1 ms link + 6 ms of layers.
        Assert.Equal(15, r.Route!.ExpectedCostMs, 6);
    }

    [Fact]
    public void Route_RelayedLink_CostsItsRoundTripPlusTheRelayPenalty()
    {
        // From A, B is reached through a relay (10 ms measured), B2 directly at 14 ms: with the 5 ms relay penalty B2 wins.
        RouteCandidate[] candidates =
        [
            WithLinks(Cand(A, 0, 6), (B, HopPath.Relayed, 10), (B2, HopPath.Direct, 14)),
            Cand(B, 6, 12, rtt: 30), Cand(B2, 6, 12, rtt: 30),
        ];
        var router = Router(new LeastInFlightPolicy());
        Assert.Equal($"{A}[0:6) → {B2}[6:12)", Describe(router.Route(12, candidates)));
        var cheapRelay = Router(new LeastInFlightPolicy(), new RoutingOptions { RelayPenaltyMs = 0 });
        Assert.Equal($"{A}[0:6) → {B}[6:12)", Describe(cheapRelay.Route(12, candidates)));
        Assert.Equal(15, router.LinkCost(candidates[0], candidates[1]), 6);
        Assert.Equal(30, router.LinkCost(null, candidates[1]), 6); // from the coordinator: the node's own round trip
    }

    [Fact]
    public void Route_MeasuredLinkThroughAMiddleStage_CanMakeALongerChainCheaper()
    {
        // One node Y holds everything but is 50 ms away; the chain X → Z is reachable quickly and X measured X→Z at 1 ms.
        const int Z = Zzz;
        RouteCandidate[] candidates = [Cand(Y, 0, 12, rtt: 50), WithLinks(Cand(X, 0, 6, rtt: 2), (Z, HopPath.Punched, 1)), Cand(Z, 6, 12, rtt: 60)];
        var r = Router().Route(12, candidates);
        Assert.Equal($"{X}[0:6) → {Z}[6:12)", Describe(r));
        Assert.Equal(2 + 6 + 1 + 6, r.Route!.ExpectedCostMs, 6);
    }

    [Fact]
    public void Route_SingleNodeHoldingAll_OneHop()
    {
        var r = Router().Route(12, [Cand(A, 0, 12)]);
        Assert.Equal($"{A}[0:12)", Describe(r));
        // 1 ms rtt + 12 layers at 1000 layer-tokens/s = 12 ms.
        Assert.Equal(13, r.Route!.ExpectedCostMs, 6);
    }

    [Fact]
    public void Route_Pipeline_ChainsStagesInOrder()
    {
        var r = Router().Route(12, [Cand(C, 8, 12), Cand(A, 0, 4), Cand(B, 4, 8)]);
        Assert.Equal($"{A}[0:4) → {B}[4:8) → {C}[8:12)", Describe(r));
        AssertChain(r.Route!, 0, 12);
    }

    [Fact]
    public void Route_OverlappingRanges_UsesSubRangesAndFewestHops()
    {
        // a holds 0-8, b holds 4-12: two hops, split anywhere in 4..8; never three.
        var r = Router().Route(12, [Cand(A, 0, 8), Cand(B, 4, 12)]);
        Assert.Equal(2, r.Route!.Hops.Count);
        AssertChain(r.Route, 0, 12);
        Assert.Equal(A, r.Route.Hops[0].NodeId);
    }

    [Fact]
    public void Route_PrefersFastNodeForTheOverlap()
    {
        // Overlap 4-8 should run on the 10× faster node.
        var r = Router().Route(12, [Cand(Slow, 0, 8, tp: 100), Cand(Fast, 4, 12, tp: 1000)]);
        Assert.Equal($"{Slow}[0:4) → {Fast}[4:12)", Describe(r));
    }

    [Fact]
    public void Route_HighRttNodeAvoided_WhenAlternativeExists()
    {
        var r = Router().Route(12, [Cand(Far, 0, 12, rtt: 200), Cand(A, 0, 6, rtt: 1), Cand(B, 6, 12, rtt: 1)]);
        Assert.Equal($"{A}[0:6) → {B}[6:12)", Describe(r));
        // Two hops of 1 ms RTT + 6 ms compute each.
        Assert.Equal(2 + 12, r.Route!.ExpectedCostMs, 6);
    }

    [Fact]
    public void Route_LoadedNodeAvoided_ByLoadFactor()
    {
        // Same hardware; a's queue makes b cheaper: 1 + 12×(1+0.5×4) = 37 ms vs 1 + 12 = 13 ms.
        var r = Router(new LeastInFlightPolicy()).Route(12, [Cand(A, 0, 12, inFlight: 4), Cand(B, 0, 12, tp: 900)]);
        Assert.Equal($"{B}[0:12)", Describe(r));
    }

    [Fact]
    public void Route_SuspectNode_UsedOnlyAsLastResort()
    {
        var router = Router();
        Assert.Equal($"{B}[0:12)", Describe(router.Route(12, [Cand(A, 0, 12, suspect: true), Cand(B, 0, 12, tp: 500)])));
        Assert.Equal($"{A}[0:12)", Describe(router.Route(12, [Cand(A, 0, 12, suspect: true)])));
    }

    [Fact]
    public void Route_Uncovered_ReportsGaps()
    {
        var r = Router().Route(12, [Cand(A, 0, 4), Cand(B, 6, 10)]);
        Assert.False(r.Success);
        Assert.Equal([new LayerRange(4, 6), new LayerRange(10, 12)], r.Uncovered);
        Assert.False(Router().Route(12, []).Success);
    }

    [Fact]
    public void Route_SubSpan_OnlyThoseLayers()
    {
        var r = Router().Route(new LayerRange(3, 9), [Cand(A, 0, 6), Cand(B, 6, 12)]);
        Assert.Equal($"{A}[3:6) → {B}[6:9)", Describe(r));
    }

    [Fact]
    public void PowerOfTwo_TwoReplicas_NeverPicksTheBusierOne()
    {
        var router = Router();
        for (int busy = 1; busy < 5; busy++)
        {
            // Equal hardware; balancing must always choose the one with less in-flight work.
            var r = router.Route(12, [Cand(A, 0, 12, inFlight: busy), Cand(B, 0, 12, inFlight: busy - 1)]);
            Assert.Equal(B, r.Route!.Hops[0].NodeId);
        }
    }

    [Fact]
    public void PowerOfTwo_SpreadsConcurrentJobsOverReplicas()
    {
        var reg = new NodeRegistry(new FailureDetectorOptions(), new ManualTimeProvider());
        foreach (var (id, range) in new[] { (A1, (0, 6)), (A2, (0, 6)), (A3, (0, 6)), (B1, (6, 12)), (B2, (6, 12)) })
        {
            reg.Register(new NodeInfo { Id = id, Name = $"node-{id}", Endpoint = "x", MemoryBudgetBytes = 1, LayerThroughput = 1000 },
                new LayerRange(range.Item1, range.Item2));
        }
        var router = Router(new PowerOfTwoChoicesPolicy(new Random(7)));
        for (int job = 0; job < 30; job++)
        {
            var route = router.Route(12, RouteCandidate.FromAll(reg.Snapshot())).Route!;
            AssertChain(route, 0, 12);
            foreach (var hop in route.Hops) reg.AdjustInFlight(hop.NodeId, +1);
        }
        var load = reg.Snapshot().ToDictionary(n => n.Id, n => n.InFlight);
        Assert.InRange(load[A1] + load[A2] + load[A3], 30, 30);
        Assert.All(new[] { A1, A2, A3 }, id => Assert.InRange(load[id], 8, 12));
        Assert.Equal(15, load[B1]);
        Assert.Equal(15, load[B2]);
    }

    [Fact]
    public void PowerOfTwo_SameSeed_SameChoices()
    {
        var cands = new[] { Cand(A, 0, 12), Cand(B, 0, 12), Cand(C, 0, 12), Cand(D, 0, 12) };
        string Run(int seed)
        {
            var router = Router(new PowerOfTwoChoicesPolicy(new Random(seed)));
            return string.Join(",", Enumerable.Range(0, 20).Select(_ => router.Route(12, cands).Route!.Hops[0].NodeId));
        }
        Assert.Equal(Run(3), Run(3));
        Assert.True(Run(3).Split(',').Distinct().Count() > 1);
    }

    [Fact]
    public void Balancing_DoesNotSendToAMuchSlowerReplica()
    {
        // Slow is 10× slower: not interchangeable, so even idle it is not picked while Fast has light load.
        var router = Router(new LeastInFlightPolicy());
        var r = router.Route(12, [Cand(Fast, 0, 12, inFlight: 1), Cand(Slow, 0, 12, tp: 100)]);
        Assert.Equal(Fast, r.Route!.Hops[0].NodeId);
    }

    [Fact]
    public void RouteCandidate_FromRegistry_OnlyServingNodes()
    {
        var clock = new ManualTimeProvider();
        var reg = new NodeRegistry(new FailureDetectorOptions(), clock);
        NodeInfo I(int id) => new() { Id = id, Name = $"node-{id}", Endpoint = "x", MemoryBudgetBytes = 1, LayerThroughput = 10 };
        reg.Register(I(Serving), new LayerRange(0, 12));
        reg.Register(I(Joining));
        reg.Register(I(Loading)); reg.AssignRange(Loading, new LayerRange(0, 6));
        reg.Register(I(Draining), new LayerRange(0, 12)); reg.BeginDrain(Draining);
        reg.Register(I(Suspect), new LayerRange(0, 12));
        clock.AdvanceMs(100);
        reg.ReportFailure(Suspect);
        var cands = RouteCandidate.FromAll(reg.Snapshot());
        Assert.Equal([Serving, Suspect], cands.Select(c => c.NodeId).Order());
        Assert.True(cands.Single(c => c.NodeId == Suspect).Suspect);
    }

    [Fact]
    public void Options_Validate_ReportsAllErrorsAtOnce()
    {
        var o = new RoutingOptions { LoadPenaltyPerInFlight = -1, SuspectPenaltyMs = double.NaN, DefaultRttMs = -2, ReplicaCostTolerance = -0.1 };
        Assert.Equal(4, o.Validate().Count);
        Assert.Throws<ArgumentException>(() => new ShortestPathRouter(o, new LeastInFlightPolicy()));
    }
}
