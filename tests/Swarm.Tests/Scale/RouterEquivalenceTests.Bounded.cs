using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Routing;
using Swarm.Coordinator.Simulation;
using Swarm.Protocol;
using Swarm.Tests.Coordinator;
using Xunit;

namespace Swarm.Tests.Scale;

/// <summary>
/// The bounded search (<see cref="RouteCandidateIndex"/>: each layer's <see cref="RoutingOptions.CandidatesPerLayer"/> best
/// holders, kept up to date from the registry's changes): where no layer has more holders, the route is the full search's,
/// hop for hop; above it, the route is the full search's whenever the full search's route runs through candidates only,
/// and on large swarms drawn like <c>swarm sim</c>'s its cost stays within <see cref="LargeSwarmCostBound"/> of the full search's.
/// </summary>
public partial class RouterEquivalenceTests
{
    /// <summary>The stated bound: on large random swarms a bounded route costs at most this fraction more than the exact one.</summary>
    private const double LargeSwarmCostBound = 0.05;

    [Fact]
    public void Index_AtMostBoundHoldersPerLayer_RoutesExactlyAsTheFullSearch()
    {
        int compared = 0, multiHop = 0;
        for (int seed = 0; seed < 300; seed++)
        {
            var random = new Random(seed);
            int layers = random.Next(4, 25);
            var (registry, time) = RegistryOf(random, RandomCandidates(random, layers));
            var options = new RoutingOptions { CandidatesPerLayer = random.Next(3, 12) };
            var index = new RouteCandidateIndex(registry, options);
            Churn(random, registry, time); // the index follows changes made after it was built
            var all = RouteCandidate.FromAll(registry.Snapshot());
            var span = new LayerRange(0, layers);
            if (MaxHolders(all, span) > options.CandidatesPerLayer) continue;

            var exact = new ShortestPathRouter(options, new LeastInFlightPolicy()).Route(span, all);
            var bounded = new ShortestPathRouter(options, new LeastInFlightPolicy()).Route(span, index.Candidates(span));
            Assert.Equal(all.Where(c => c.Range.Overlaps(span)).Select(c => c.NodeId).Order(), index.Candidates(span).Select(c => c.NodeId));
            Assert.Equal(exact.Uncovered, bounded.Uncovered);
            Assert.Equal(exact.Route?.ToString(), bounded.Route?.ToString());
            Assert.Equal(exact.Route?.ExpectedCostMs, bounded.Route?.ExpectedCostMs);
            compared++;
            if (exact.Route is { Hops.Count: > 1 }) multiHop++;
        }
        Assert.True(compared > 100 && multiHop > 25, $"{compared} swarms compared, {multiHop} multi-hop routes");
    }

    [Fact]
    public void Index_MoreHoldersThanTheBound_ExactWhenTheBestRouteUsesCandidatesAndNeverCheaperThanExact()
    {
        int overBound = 0, bestWithin = 0;
        for (int seed = 0; seed < 300; seed++)
        {
            var random = new Random(seed);
            int layers = random.Next(4, 25);
            // Without measured links and with no replica tolerance, balancing never changes a route's cost (a swapped replica
            // costs the same and so does the hop after it), so the costs compared are the programme's own.
            var (registry, time) = RegistryOf(random, [.. RandomCandidates(random, layers).Select(c => c with { Links = new Dictionary<int, LinkReport>() })]);
            var options = new RoutingOptions { CandidatesPerLayer = random.Next(1, 4), ReplicaCostTolerance = 0 };
            var index = new RouteCandidateIndex(registry, options);
            Churn(random, registry, time);
            var all = RouteCandidate.FromAll(registry.Snapshot());
            var span = new LayerRange(0, layers);
            if (MaxHolders(all, span) <= options.CandidatesPerLayer) continue;
            overBound++;

            var candidates = index.Candidates(span);
            var exactResult = new ShortestPathRouter(options, new LeastInFlightPolicy()).Route(span, all);
            var boundedResult = new ShortestPathRouter(options, new LeastInFlightPolicy()).Route(span, candidates);
            Assert.Equal(exactResult.Uncovered, boundedResult.Uncovered); // every held layer keeps a candidate
            if (exactResult.Route is not { } exact) continue;
            var bounded = boundedResult.Route!;
            Assert.True(bounded.ExpectedCostMs >= exact.ExpectedCostMs - 1e-9, $"seed {seed}: {bounded.ExpectedCostMs} < {exact.ExpectedCostMs}");
            if (exact.NodeIds.All(id => candidates.Any(c => c.NodeId == id)))
            {
                Assert.Equal(exact.ExpectedCostMs, bounded.ExpectedCostMs, 9);
                bestWithin++;
            }
        }
        Assert.True(overBound > 100 && bestWithin > 20, $"{overBound} swarms over the bound, {bestWithin} with the best route among candidates");
    }

    [Fact]
    public void Index_LargeSimulatedSwarms_BoundedRouteWithinStatedBoundOfExact()
    {
        var options = new RoutingOptions();
        double worst = 0;
        for (int seed = 0; seed < 12; seed++)
        {
            var random = new Random(seed);
            const int Layers = 36;
            int count = 500 + 250 * seed;
            var nodes = new List<RouteCandidate>();
            for (int id = 1; id <= count; id++)
            {
                var machine = MachineProfiles.Draw(random, 1);
                int length = (int)Math.Clamp(machine.MemoryBytes / (0.7 * (1L << 30)), 1, Layers);
                int start = random.Next(0, Layers - length + 1);
                nodes.Add(new RouteCandidate
                {
                    NodeId = id, Range = new LayerRange(start, start + length), LayerThroughput = machine.LayerTokensPerSecond,
                    RttMs = Geography.RttMs(Geography.Draw(random), Geography.Coordinator), InFlight = random.Next(4) == 0 ? random.Next(1, 6) : 0,
                });
            }
            var (registry, _) = RegistryOf(random, nodes);
            var index = new RouteCandidateIndex(registry, options);
            var all = RouteCandidate.FromAll(registry.Snapshot());
            var span = new LayerRange(0, Layers);
            Assert.True(MaxHolders(all, span) > 4 * options.CandidatesPerLayer);
            var candidates = index.Candidates(span);
            Assert.True(candidates.Count <= Layers * options.CandidatesPerLayer);

            double exact = new ShortestPathRouter(options, new LeastInFlightPolicy()).Route(span, all).Route!.ExpectedCostMs;
            double bounded = new ShortestPathRouter(options, new LeastInFlightPolicy()).Route(span, candidates).Route!.ExpectedCostMs;
            worst = Math.Max(worst, bounded / exact - 1);
        }
        Assert.True(worst <= LargeSwarmCostBound, $"a bounded route cost {worst:P2} more than the exact one");
        output.WriteLine($"large swarms: worst bounded route {worst:P3} above exact");
    }

    [Fact]
    public void Index_OneLayerThreeHolders_OffersTheTwoCheapestAndFollowsLoadAndDepartures()
    {
        var time = new ManualTimeProvider();
        var registry = new NodeRegistry(new FailureDetectorOptions(), time);
        var index = new RouteCandidateIndex(registry, new RoutingOptions { CandidatesPerLayer = 2 });
        foreach (var (id, rtt) in new[] { (1, 10.0), (2, 20.0), (3, 30.0) })
        {
            registry.Register(new NodeInfo { Id = id, Name = $"n{id}", Endpoint = $"10.0.0.1:{id}", MemoryBudgetBytes = 1 << 30, LayerThroughput = 1000 });
            registry.AssignRange(id, new LayerRange(0, 1));
            registry.MarkServing(id);
            registry.Heartbeat(id, rtt);
        }
        int[] Offered() => [.. index.Candidates(new LayerRange(0, 1)).Select(c => c.NodeId)];

        Assert.Equal(3, index.Count);
        Assert.Equal([1, 2], Offered());
        registry.Heartbeat(1, 100); // smoothed RTT (10 + 0.25 × 90) moves past node 3's
        Assert.True(registry.Get(1)!.RttMs > 30);
        Assert.Equal([2, 3], Offered());
        registry.AdjustInFlight(2, 200); // 200 jobs: 1 ms × (1 + 0.5 × 200) per layer
        Assert.Equal([1, 3], Offered());
        registry.BeginDrain(3);
        Assert.Equal([1, 2], Offered());
        Assert.Equal(2, index.Count);
        registry.Remove(1);
        Assert.Equal([2], Offered());
    }

    /// <summary>A registry whose routable nodes are <paramref name="nodes"/> (range served, RTT, in-flight, links; suspects made by silence).</summary>
    private static (NodeRegistry Registry, ManualTimeProvider Time) RegistryOf(Random random, IReadOnlyList<RouteCandidate> nodes)
    {
        var time = new ManualTimeProvider();
        var registry = new NodeRegistry(new FailureDetectorOptions(), time);
        foreach (var n in nodes)
        {
            registry.Register(new NodeInfo { Id = n.NodeId, Name = $"n{n.NodeId}", Endpoint = $"10.0.0.1:{n.NodeId}", MemoryBudgetBytes = 1 << 30, LayerThroughput = n.LayerThroughput });
            registry.AssignRange(n.NodeId, n.Range);
            registry.MarkServing(n.NodeId);
            registry.AdjustInFlight(n.NodeId, n.InFlight);
        }
        time.AdvanceMs(1000);
        foreach (var n in nodes)
            if (!n.Suspect) registry.Heartbeat(n.NodeId, n.RttMs, n.Links.Count > 0 ? [.. n.Links.Values] : null);
        time.AdvanceMs(1000); // the silent ones are now past suspect-after, the others not
        registry.Evaluate();
        return (registry, time);
    }

    /// <summary>Changes after the index was built: loads move, round trips change, some nodes leave or fall silent.</summary>
    private static void Churn(Random random, NodeRegistry registry, ManualTimeProvider time)
    {
        foreach (var n in registry.Snapshot())
        {
            switch (random.Next(8))
            {
                case 0: registry.AdjustInFlight(n.Id, random.Next(-2, 3)); break;
                case 1: registry.Heartbeat(n.Id, new[] { 2.0, 5, 20, 80 }[random.Next(4)]); break;
                case 2: registry.BeginDrain(n.Id); break;
                case 3: registry.Ban(n.Id); break;
            }
        }
        // A newcomer serving some layers: the index lists it from its first change on.
        int id = registry.Snapshot().Max(n => n.Id) + 1, start = random.Next(0, 3);
        registry.Register(new NodeInfo { Id = id, Name = $"n{id}", Endpoint = $"10.0.0.1:{id}", MemoryBudgetBytes = 1 << 30, LayerThroughput = 400 });
        registry.AssignRange(id, new LayerRange(start, start + 2));
        registry.MarkServing(id);
        registry.Heartbeat(id, 2);
        time.AdvanceMs(200);
        registry.Evaluate();
    }

    private static int MaxHolders(IReadOnlyList<RouteCandidate> nodes, LayerRange span) =>
        Enumerable.Range(span.Start, span.Count).Max(l => nodes.Count(c => c.Range.Contains(l)));
}
