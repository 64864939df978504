using Swarm.Protocol;

namespace Swarm.Coordinator.Routing;

/// <summary>
/// Shortest path over (layer boundary, node that ended there). Entering node <c>c</c> costs the link into it — the
/// round trip the previous node measured on its link to <c>c</c> (+ a penalty when relayed), or, where none was
/// measured (and for the first hop), <c>c</c>'s round trip to the coordinator — and running <c>[a, b)</c> on it costs
/// <c>(b − a)/throughput × (1 + penalty × in-flight)</c> (+ a penalty for suspects). A forward-only dynamic programme
/// finds the cheapest chain (ties: fewer hops): per boundary, the unmeasured entries share one minimum and only the
/// measured links are visited one by one, so a step stays linear in nodes plus reported links. Then, hop by hop,
/// the <see cref="ILoadBalancingPolicy"/> picks among interchangeable replicas by in-flight work.
/// </summary>
internal sealed class ShortestPathRouter : IRouter
{
    private const int Coordinator = -1; // the "node" a route starts from
    private const double Epsilon = 1e-12;
    private readonly RoutingOptions _options;
    private readonly ILoadBalancingPolicy _balancer;

    /// <summary>Creates the router.</summary>
    /// <exception cref="ArgumentException">The options are invalid (all problems listed).</exception>
    public ShortestPathRouter(RoutingOptions options, ILoadBalancingPolicy balancer)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(balancer);
        var errors = options.Validate();
        if (errors.Count > 0) throw new ArgumentException("invalid routing options: " + string.Join("; ", errors));
        _options = options;
        _balancer = balancer;
    }

    /// <inheritdoc/>
    public string Name => "shortest-path";

    /// <inheritdoc/>
    public RoutingOptions Options => _options;

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

    /// <inheritdoc/>
    public RoutingResult Route(int numLayers, IReadOnlyList<RouteCandidate> candidates) =>
        Route(new LayerRange(0, numLayers), candidates);

    /// <summary>A node's hop ending at a boundary: its cost from the coordinator, hops, the boundary it entered at, the node before it.</summary>
    private readonly record struct Reached(int Node, int Index, double Cost, int Hops, int From, int PrevNode);

    /// <summary>A node's cheapest way in so far: the cost before its hop, hops before it, the boundary and node it came from.</summary>
    private readonly record struct Entry(double Cost, int Hops, int At, int Prev);

    /// <inheritdoc/>
    public RoutingResult Route(LayerRange span, IReadOnlyList<RouteCandidate> candidates)
    {
        ArgumentNullException.ThrowIfNull(candidates);
        var usable = candidates
            .Where(c => c.Range.Overlaps(span) && c.LayerThroughput > 0)
            .DistinctBy(c => c.NodeId)
            .OrderBy(c => c.NodeId)
            .ToList();
        int n = span.End - span.Start;
        // holders[a]: the candidates (indices into usable, in id order) holding layer span.Start + a — built once in
        // O(Σ ranges), so the programme visits each node only at the boundaries it holds instead of every node at every one.
        // Within a boundary they are in (first layer in the span, id) order: every layer is covered (checked below), so every
        // boundary is reached and a node is first entered at its first layer — the order the states must keep (see reached).
        var holders = new List<int>[n];
        for (int i = 0; i < n; i++) holders[i] = [];
        var byStart = Enumerable.Range(0, usable.Count).OrderBy(i => Math.Max(usable[i].Range.Start, span.Start)).ThenBy(i => usable[i].NodeId);
        foreach (int i in byStart)
            for (int l = Math.Max(usable[i].Range.Start, span.Start); l < Math.Min(usable[i].Range.End, span.End); l++) holders[l - span.Start].Add(i);
        var uncovered = LayerRange.FromMask(span.End, l => l >= span.Start && holders[l - span.Start].Count == 0);
        if (uncovered.Count > 0) return new RoutingResult(null, uncovered);

        var byId = usable.ToDictionary(c => c.NodeId);
        // Each node's measured links to other candidates, as (candidate index, link cost), computed once per route.
        var index = new Dictionary<int, int>(usable.Count);
        for (int i = 0; i < usable.Count; i++) index[usable[i].NodeId] = i;
        var outLinks = new (int Target, double Cost)[usable.Count][];
        for (int i = 0; i < usable.Count; i++)
        {
            var from = usable[i];
            var list = new List<(int, double)>(from.Links.Count);
            foreach (int to in from.Links.Keys)
                if (index.TryGetValue(to, out int j)) list.Add((j, LinkCost(from, usable[j])));
            outLinks[i] = [.. list];
        }
        // The best entry over a measured link into each candidate at the current boundary (valid where linkStamp = a + 1).
        var linkStamp = new int[usable.Count];
        var linkEntry = new (double Cost, int Hops, int Prev)[usable.Count];
        // reached[b]: the nodes whose hop ends at boundary b with their cheapest way there (b = 0: the coordinator), in the
        // order they were first entered (then id), which decides exact ties. A hop's cost is linear in its layers, so which
        // entry boundary is cheapest for a node does not depend on where its hop ends: each node keeps one running best
        // entry, and every boundary costs O(nodes holding it) — O(L × replicas) a route, not O(L × N + Σ replicas × range).
        var reached = new List<Reached>[n + 1];
        reached[0] = [new Reached(Coordinator, -1, 0, 0, -1, Coordinator)];
        var entries = new Entry?[usable.Count];
        for (int a = 0; a < n; a++)
        {
            var here = reached[a];
            var next = reached[a + 1] = [];
            Reached cheapest = default;
            bool reachable = here.Count > 0;
            int layerA = span.Start + a;
            if (reachable)
            {
                cheapest = here.MinBy(r => (r.Cost, r.Hops));
                // Entering a node over a link someone measured to it: visit the reported links of the nodes ending here
                // (only those into nodes holding this layer can start a hop here).
                foreach (var state in here)
                {
                    if (state.Node == Coordinator) continue;
                    foreach (var (to, linkCost) in outLinks[state.Index])
                    {
                        if (!usable[to].Range.Contains(layerA)) continue;
                        double cost = state.Cost + linkCost;
                        if (linkStamp[to] != a + 1 || Better(cost, state.Hops, linkEntry[to].Cost, linkEntry[to].Hops))
                            (linkStamp[to], linkEntry[to]) = (a + 1, (cost, state.Hops, state.Node));
                    }
                }
            }
            foreach (int i in holders[a])
            {
                var c = usable[i];
                if (reachable)
                {
                    // Else at c's distance to the coordinator, from the cheapest state.
                    var entry = new Entry(cheapest.Cost + LinkCost(null, c), cheapest.Hops, a, cheapest.Node);
                    if (linkStamp[i] == a + 1 && linkEntry[i] is var linked && Better(linked.Cost, linked.Hops, entry.Cost, entry.Hops))
                        entry = entry with { Cost = linked.Cost, Hops = linked.Hops, Prev = linked.Prev };
                    if (entries[i] is not { } known) entries[i] = entry;
                    else if (Better(entry.Cost + NodeCost(c, 1), entry.Hops + 1, known.Cost + NodeCost(c, a + 1 - known.At), known.Hops + 1))
                        entries[i] = entry;
                }
                if (entries[i] is { } e)
                    next.Add(new Reached(c.NodeId, i, e.Cost + NodeCost(c, a + 1 - e.At), e.Hops + 1, e.At, e.Prev));
            }
        }

        var chain = new List<(int NodeId, LayerRange Layers)>();
        int node = reached[n].MinBy(r => (r.Cost, r.Hops)).Node;
        for (int b = n; b > 0;)
        {
            var r = reached[b].Find(x => x.Node == node);
            chain.Add((node, new LayerRange(span.Start + r.From, span.Start + b)));
            (b, node) = (r.From, r.PrevNode);
        }
        chain.Reverse();
        return new RoutingResult(Balanced(chain, byId, span, holders, usable), []);
    }

    private static bool Better(double cost, int hops, double than, int thanHops) =>
        cost < than - Epsilon || (Math.Abs(cost - than) <= Epsilon && hops < thanHops);

    /// <summary>The chain with each hop's node possibly swapped for an interchangeable replica, and its expected cost.</summary>
    private Route Balanced(List<(int NodeId, LayerRange Layers)> chain, Dictionary<int, RouteCandidate> byId, LayerRange span, List<int>[] holders,
        List<RouteCandidate> usable)
    {
        var hops = new List<RouteHop>(chain.Count);
        RouteCandidate? previous = null;
        double total = 0;
        foreach (var (nodeId, layers) in chain)
        {
            var chosen = Balance(previous, byId[nodeId], layers, [.. holders[layers.Start - span.Start].Select(i => usable[i])]);
            total += LinkCost(previous, chosen) + NodeCost(chosen, layers.Count);
            hops.Add(new RouteHop(chosen.NodeId, layers));
            previous = chosen;
        }
        return new Route(hops, total);
    }

    /// <param name="firstLayerHolders">The candidates holding the hop's first layer (those holding all its layers are among them).</param>
    private RouteCandidate Balance(RouteCandidate? previous, RouteCandidate chosen, LayerRange layers, List<RouteCandidate> firstLayerHolders)
    {
        var holders = firstLayerHolders.Where(c => c.Range.Contains(layers)).ToList();
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
