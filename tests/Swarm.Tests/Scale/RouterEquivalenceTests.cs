using Swarm.Coordinator.Routing;
using Swarm.Protocol;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Scale;

/// <summary>
/// The router's O(L × replicas) programme (one running entry per node, layer buckets, links resolved once) finds the same
/// route at the same cost as the programme it replaced, which visited every node at every boundary and kept a state per
/// (boundary, node, end) — on random swarms with measured and relayed links, suspects, loads and exact ties.
/// </summary>
public partial class RouterEquivalenceTests(ITestOutputHelper output)
{
    [Fact]
    public void Route_OnRandomSwarms_EqualsTheExhaustiveProgramme()
    {
        var options = new RoutingOptions();
        var router = new ShortestPathRouter(options, new LeastInFlightPolicy());
        var reference = new ExhaustiveReferenceRouter(options, new LeastInFlightPolicy());
        int multiHop = 0;
        for (int seed = 0; seed < 400; seed++)
        {
            var random = new Random(seed);
            int layers = random.Next(4, 25);
            var candidates = RandomCandidates(random, layers);
            var span = random.Next(3) == 0 ? new LayerRange(random.Next(0, layers / 2), layers) : new LayerRange(0, layers);
            var expected = reference.Route(span, candidates);
            var actual = router.Route(span, candidates);
            Assert.Equal(expected.Uncovered, actual.Uncovered);
            Assert.Equal(expected.Route?.ToString(), actual.Route?.ToString());
            if (expected.Route is { } r)
            {
                Assert.Equal(r.ExpectedCostMs, actual.Route!.ExpectedCostMs, 9);
                if (r.Hops.Count > 1) multiHop++;
            }
        }
        Assert.True(multiHop > 100, $"{multiHop} multi-hop routes"); // the comparison covers real chains, not single hops
    }

    /// <summary>Nodes with random ranges; throughputs and RTTs from small sets so equal costs (ties) happen.</summary>
    private static List<RouteCandidate> RandomCandidates(Random random, int layers)
    {
        int count = random.Next(2, 40);
        var nodes = new List<RouteCandidate>();
        for (int id = 1; id <= count; id++)
        {
            int length = random.Next(1, Math.Min(layers, 8) + 1), start = random.Next(0, layers - length + 1);
            nodes.Add(new RouteCandidate
            {
                NodeId = id * 3 % 101, Range = new LayerRange(start, start + length),
                LayerThroughput = new[] { 50.0, 100, 200, 400 }[random.Next(4)],
                RttMs = random.Next(4) == 0 ? null : new[] { 2.0, 5, 20, 80 }[random.Next(4)],
                InFlight = random.Next(3) == 0 ? random.Next(1, 4) : 0,
                Suspect = random.Next(12) == 0,
            });
        }
        // Measured links between random pairs, some relayed.
        return [.. nodes.Select(n => n with { Links = RandomLinks(random, n, nodes) })];
    }

    private static Dictionary<int, LinkReport> RandomLinks(Random random, RouteCandidate from, List<RouteCandidate> nodes)
    {
        var links = new Dictionary<int, LinkReport>();
        int count = random.Next(0, 5);
        for (int i = 0; i < count; i++)
        {
            var to = nodes[random.Next(nodes.Count)];
            if (to.NodeId == from.NodeId) continue;
            links[to.NodeId] = new LinkReport { ToNodeId = to.NodeId, Path = random.Next(4) == 0 ? HopPath.Relayed : HopPath.Direct, RttMs = new[] { 1.0, 3, 10, 40 }[random.Next(4)] };
        }
        return links;
    }
}

/// <summary>The router as it was before the O(L × replicas) programme (kept here as the reference it must agree with).</summary>
internal sealed class ExhaustiveReferenceRouter
{
    private const int Coordinator = -1; // the "node" a route starts from
    private const double Epsilon = 1e-12;
    private readonly RoutingOptions _options;
    private readonly ILoadBalancingPolicy _balancer;

    /// <summary>Creates the router.</summary>
    /// <exception cref="ArgumentException">The options are invalid (all problems listed).</exception>
    public ExhaustiveReferenceRouter(RoutingOptions options, ILoadBalancingPolicy balancer)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(balancer);
        var errors = options.Validate();
        if (errors.Count > 0) throw new ArgumentException("invalid routing options: " + string.Join("; ", errors));
        _options = options;
        _balancer = balancer;
    }

    

    /// <summary>The load-balancing policy in use.</summary>
    public ILoadBalancingPolicy Balancer => _balancer;

    /// <summary>Expected milliseconds for <paramref name="c"/> to run <paramref name="layers"/> layers of one decode step, reached from the coordinator.</summary>
    public double HopCost(RouteCandidate c, int layers, bool includeLoad = true) => LinkCost(null, c) + NodeCost(c, layers, includeLoad);

    /// <summary>
    /// Expected milliseconds to hand a step from <paramref name="from"/> (null: the coordinator) to <paramref name="to"/>:
    /// the round trip <paramref name="from"/> measured on that link (+ <see cref="RoutingOptions.RelayPenaltyMs"/> when
    /// relayed), else <paramref name="to"/>'s round trip to the coordinator.
    /// </summary>
    public double LinkCost(RouteCandidate? from, RouteCandidate to)
    {
        ArgumentNullException.ThrowIfNull(to);
        if (from is not null && from.Links.TryGetValue(to.NodeId, out var link))
            return link.RttMs + (link.Path == HopPath.Relayed ? _options.RelayPenaltyMs : 0);
        return to.RttMs ?? _options.DefaultRttMs;
    }

    private double NodeCost(RouteCandidate c, int layers, bool includeLoad = true)
    {
        double compute = layers * 1000.0 / Math.Max(c.LayerThroughput, 1e-9);
        if (includeLoad) compute *= 1 + _options.LoadPenaltyPerInFlight * Math.Max(0, c.InFlight);
        return compute + (c.Suspect ? _options.SuspectPenaltyMs : 0);
    }

    public RoutingResult Route(int numLayers, IReadOnlyList<RouteCandidate> candidates) =>
        Route(new LayerRange(0, numLayers), candidates);

    private readonly record struct Reached(double Cost, int Hops, int From, int PrevNode);

    public RoutingResult Route(LayerRange span, IReadOnlyList<RouteCandidate> candidates)
    {
        ArgumentNullException.ThrowIfNull(candidates);
        var usable = candidates
            .Where(c => c.Range.Overlaps(span) && c.LayerThroughput > 0)
            .DistinctBy(c => c.NodeId)
            .OrderBy(c => c.NodeId)
            .ToList();
        var uncovered = LayerRange.FromMask(span.End, l => l >= span.Start && !usable.Any(c => c.Range.Contains(l)));
        if (uncovered.Count > 0) return new RoutingResult(null, uncovered);

        var byId = usable.ToDictionary(c => c.NodeId);
        int n = span.End - span.Start;
        // reached[a]: the nodes whose hop ends at boundary a, each with its cheapest way there (a = 0: the coordinator).
        var reached = new Dictionary<int, Reached>[n + 1];
        for (int i = 0; i <= n; i++) reached[i] = [];
        reached[0][Coordinator] = new Reached(0, 0, -1, Coordinator);
        for (int a = 0; a < n; a++)
        {
            if (reached[a].Count == 0) continue;
            var (cheapest, cheapestNode) = reached[a].Select(kv => (kv.Value, kv.Key)).MinBy(r => (r.Value.Cost, r.Value.Hops));
            // Entering a node over a link someone measured to it: visit the reported links of the nodes ending here.
            var overLinks = new Dictionary<int, (double Cost, int Hops, int Prev)>();
            foreach (var (prev, state) in reached[a])
            {
                if (prev == Coordinator) continue;
                foreach (int to in byId[prev].Links.Keys)
                {
                    if (!byId.TryGetValue(to, out var target)) continue;
                    double cost = state.Cost + LinkCost(byId[prev], target);
                    if (!overLinks.TryGetValue(to, out var known) || Better(cost, state.Hops, known.Cost, known.Hops))
                        overLinks[to] = (cost, state.Hops, prev);
                }
            }
            int layerA = span.Start + a;
            foreach (var c in usable)
            {
                if (!c.Range.Contains(layerA)) continue;
                // Else at c's distance to the coordinator, from the cheapest state.
                var entry = (Cost: cheapest.Cost + LinkCost(null, c), cheapest.Hops, Prev: cheapestNode);
                if (overLinks.TryGetValue(c.NodeId, out var linked) && Better(linked.Cost, linked.Hops, entry.Cost, entry.Hops)) entry = linked;
                int maxB = Math.Min(c.Range.End, span.End) - span.Start;
                for (int b = a + 1; b <= maxB; b++)
                {
                    double cost = entry.Cost + NodeCost(c, b - a);
                    if (!reached[b].TryGetValue(c.NodeId, out var old) || Better(cost, entry.Hops + 1, old.Cost, old.Hops))
                        reached[b][c.NodeId] = new Reached(cost, entry.Hops + 1, a, entry.Prev);
                }
            }
        }

        var chain = new List<(int NodeId, LayerRange Layers)>();
        int node = reached[n].MinBy(kv => (kv.Value.Cost, kv.Value.Hops)).Key;
        for (int b = n; b > 0;)
        {
            var r = reached[b][node];
            chain.Add((node, new LayerRange(span.Start + r.From, span.Start + b)));
            (b, node) = (r.From, r.PrevNode);
        }
        chain.Reverse();
        return new RoutingResult(Balanced(chain, byId, usable), []);
    }

    private static bool Better(double cost, int hops, double than, int thanHops) =>
        cost < than - Epsilon || (Math.Abs(cost - than) <= Epsilon && hops < thanHops);

    /// <summary>The chain with each hop's node possibly swapped for an interchangeable replica, and its expected cost.</summary>
    private Route Balanced(List<(int NodeId, LayerRange Layers)> chain, Dictionary<int, RouteCandidate> byId, List<RouteCandidate> usable)
    {
        var hops = new List<RouteHop>(chain.Count);
        RouteCandidate? previous = null;
        double total = 0;
        foreach (var (nodeId, layers) in chain)
        {
            var chosen = Balance(previous, byId[nodeId], layers, usable);
            total += LinkCost(previous, chosen) + NodeCost(chosen, layers.Count);
            hops.Add(new RouteHop(chosen.NodeId, layers));
            previous = chosen;
        }
        return new Route(hops, total);
    }

    private RouteCandidate Balance(RouteCandidate? previous, RouteCandidate chosen, LayerRange layers, List<RouteCandidate> usable)
    {
        var holders = usable.Where(c => c.Range.Contains(layers)).ToList();
        if (holders.Count <= 1) return chosen;
        double Unloaded(RouteCandidate c) => LinkCost(previous, c) + NodeCost(c, layers.Count, includeLoad: false);
        double best = holders.Min(Unloaded);
        double limit = best * (1 + _options.ReplicaCostTolerance) + 1e-9;
        var peers = holders
            .Where(c => Unloaded(c) <= limit)
            .OrderBy(Unloaded)
            .ThenBy(c => c.NodeId)
            .ToList();
        // The DP's own pick may be a slower replica chosen because the fast ones are loaded; only rebalance among peers.
        return peers.Any(p => p.NodeId == chosen.NodeId) ? _balancer.Pick(peers) : chosen;
    }
}
