using Swarm.Protocol;

namespace Swarm.Coordinator.Routing;

/// <summary>
/// Shortest path over layer boundaries. Boundary <c>a</c> connects to <c>b &gt; a</c> through every node holding
/// <c>[a, b)</c>, at cost <c>rtt + (b − a)/throughput × (1 + penalty × in-flight)</c> (+ a penalty for suspects);
/// a forward-only dynamic programme finds the cheapest chain (ties: fewer hops). Then, per hop, the
/// <see cref="ILoadBalancingPolicy"/> picks among interchangeable replicas by in-flight work.
/// </summary>
public sealed class ShortestPathRouter : IRouter
{
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

    /// <summary>The load-balancing policy in use.</summary>
    public ILoadBalancingPolicy Balancer => _balancer;

    /// <summary>Expected milliseconds for <paramref name="c"/> to run <paramref name="layers"/> layers of one decode step.</summary>
    public double HopCost(RouteCandidate c, int layers, bool includeLoad = true)
    {
        double compute = layers * 1000.0 / Math.Max(c.LayerThroughput, 1e-9);
        if (includeLoad) compute *= 1 + _options.LoadPenaltyPerInFlight * Math.Max(0, c.InFlight);
        return (c.RttMs ?? _options.DefaultRttMs) + compute + (c.Suspect ? _options.SuspectPenaltyMs : 0);
    }

    /// <inheritdoc/>
    public RoutingResult Route(int numLayers, IReadOnlyList<RouteCandidate> candidates) =>
        Route(new LayerRange(0, numLayers), candidates);

    /// <inheritdoc/>
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

        int n = span.End - span.Start;
        var dist = new double[n + 1];
        var hops = new int[n + 1];
        var via = new (int From, RouteCandidate Node)?[n + 1];
        Array.Fill(dist, double.PositiveInfinity);
        dist[0] = 0;
        for (int a = 0; a < n; a++)
        {
            if (double.IsPositiveInfinity(dist[a])) continue;
            int layerA = span.Start + a;
            foreach (var c in usable)
            {
                if (!c.Range.Contains(layerA)) continue;
                int maxB = Math.Min(c.Range.End, span.End) - span.Start;
                for (int b = a + 1; b <= maxB; b++)
                {
                    double cost = dist[a] + HopCost(c, b - a);
                    if (cost < dist[b] - 1e-12 || (Math.Abs(cost - dist[b]) <= 1e-12 && hops[a] + 1 < hops[b]))
                    {
                        dist[b] = cost;
                        hops[b] = hops[a] + 1;
                        via[b] = (a, c);
                    }
                }
            }
        }

        var chosen = new List<RouteHop>();
        for (int b = n; b > 0;)
        {
            var (a, node) = via[b]!.Value;
            var layers = new LayerRange(span.Start + a, span.Start + b);
            chosen.Add(new RouteHop(Balance(node, layers, usable).NodeId, layers));
            b = a;
        }
        chosen.Reverse();
        return new RoutingResult(new Route(chosen, Cost(chosen, usable)), []);
    }

    private RouteCandidate Balance(RouteCandidate chosen, LayerRange layers, List<RouteCandidate> usable)
    {
        var holders = usable.Where(c => c.Range.Contains(layers)).ToList();
        if (holders.Count <= 1) return chosen;
        double best = holders.Min(c => HopCost(c, layers.Count, includeLoad: false));
        double limit = best * (1 + _options.ReplicaCostTolerance) + 1e-9;
        var peers = holders
            .Where(c => HopCost(c, layers.Count, includeLoad: false) <= limit)
            .OrderBy(c => HopCost(c, layers.Count, includeLoad: false))
            .ThenBy(c => c.NodeId)
            .ToList();
        // The DP's own pick may be a slower replica chosen because the fast ones are loaded; only rebalance among peers.
        return peers.Any(p => p.NodeId == chosen.NodeId) ? _balancer.Pick(peers) : chosen;
    }

    private double Cost(IReadOnlyList<RouteHop> hops, List<RouteCandidate> distinct) =>
        Cost(hops, distinct.ToDictionary(c => c.NodeId));

    private double Cost(IReadOnlyList<RouteHop> hops, Dictionary<int, RouteCandidate> byId) =>
        hops.Sum(h => byId.TryGetValue(h.NodeId, out var c) ? HopCost(c, h.Layers.Count) : 0);
}
