using Swarm.Coordinator.Membership;
using Swarm.Protocol;

namespace Swarm.Coordinator.Routing;

/// <summary>
/// The router's input at any swarm size: per layer, the routable nodes holding it ordered by the router's own estimate of
/// what a layer through them costs, kept up to date change by change (<see cref="NodeRegistry.Observe"/>) instead of
/// rebuilt from the whole table per route. <see cref="Candidates"/> hands the router the
/// <see cref="RoutingOptions.CandidatesPerLayer"/> best holders of every layer of a span: where no layer has more
/// holders than that, that is every routable node and the route is exactly the full search's; above it the search is
/// bounded to O(layers × candidates per layer) a route whatever the number of nodes.
/// </summary>
/// <remarks>
/// The estimate is a node's cost per layer when it runs its whole routable range: (round trip to the coordinator +
/// suspect penalty + range length × per-layer compute, load included) ÷ range length — the terms of the router's hop
/// cost (<see cref="ShortestPathRouter.HopCost"/>) spread over the layers one hop through the node can cover, so a long
/// range close to the coordinator ranks before a short one far away. Measured node-to-node links do not enter the
/// estimate (they depend on the previous hop); the router still uses them among the candidates. A key is refreshed
/// when its node changes (load, health, range) and when a heartbeat moves its round trip by more than
/// <see cref="RttRefreshFraction"/>. Thread-safe: the registry writes under its lock, routes read under this one.
/// </remarks>
internal sealed class RouteCandidateIndex
{
    /// <summary>A round trip that moved by less than this fraction does not re-rank its node (smoothed RTTs jitter on every heartbeat).</summary>
    public const double RttRefreshFraction = 0.05;

    private readonly Lock _gate = new();
    private readonly NodeRegistry _registry;
    private readonly RoutingOptions _options;
    private readonly List<SortedSet<(double Key, int Id)>> _byLayer = [];
    private readonly Dictionary<int, Ranked> _ranked = [];

    /// <summary>Where a node is in the index: its key, the range it is listed under, the round trip the key used.</summary>
    private readonly record struct Ranked(double Key, LayerRange Range, double RttMs);

    /// <summary>Indexes <paramref name="registry"/>'s routable nodes and follows its changes from now on.</summary>
    /// <exception cref="ArgumentException">The options are invalid (all problems listed).</exception>
    public RouteCandidateIndex(NodeRegistry registry, RoutingOptions options)
    {
        ArgumentNullException.ThrowIfNull(registry);
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate();
        if (errors.Count > 0) throw new ArgumentException("invalid routing options: " + string.Join("; ", errors));
        _registry = registry;
        _options = options;
        registry.Observe(Changed);
    }

    /// <summary>Nodes listed (the routable ones).</summary>
    public int Count
    {
        get { lock (_gate) return _ranked.Count; }
    }

    /// <summary>
    /// The routable nodes the router considers for <paramref name="span"/>: the union over its layers of each layer's
    /// <see cref="RoutingOptions.CandidatesPerLayer"/> best holders (all of them where a layer has no more), as their
    /// current <see cref="RouteCandidate"/>s, in id order. A layer nobody holds stays uncovered for the router to report.
    /// </summary>
    public IReadOnlyList<RouteCandidate> Candidates(LayerRange span)
    {
        var ids = new SortedSet<int>();
        lock (_gate)
        {
            for (int l = span.Start; l < Math.Min(span.End, _byLayer.Count); l++)
            {
                int taken = 0;
                foreach (var (_, id) in _byLayer[l])
                {
                    if (taken++ == _options.CandidatesPerLayer) break;
                    ids.Add(id);
                }
            }
        }
        var candidates = new List<RouteCandidate>(ids.Count);
        foreach (int id in ids)
            if (_registry.Get(id) is { } node && RouteCandidate.From(node) is { } c) candidates.Add(c);
        return candidates;
    }

    /// <summary>The estimate the index ranks <paramref name="node"/> by (lower is better), or null when it is not routable.</summary>
    public double? KeyOf(NodeSnapshot node)
    {
        ArgumentNullException.ThrowIfNull(node);
        if (node.Banned || node.RoutableRange is not LayerRange r || r.Count <= 0 || !(node.Info.LayerThroughput > 0)) return null;
        double perLayer = 1000.0 / node.Info.LayerThroughput * (1 + _options.LoadPenaltyPerInFlight * Math.Max(0, node.InFlight));
        double fixedMs = (node.RttMs ?? _options.DefaultRttMs) + (node.Health == NodeHealth.Suspect ? _options.SuspectPenaltyMs : 0);
        return (fixedMs + r.Count * perLayer) / r.Count;
    }

    private void Changed(NodeSnapshot? before, NodeSnapshot? after)
    {
        int id = (after ?? before)!.Id;
        lock (_gate)
        {
            bool listed = _ranked.TryGetValue(id, out var old);
            double? key = after is null ? null : KeyOf(after);
            if (key is not double k)
            {
                if (listed) Unlist(id, old);
                return;
            }
            var range = after!.RoutableRange!.Value;
            double rtt = after.RttMs ?? _options.DefaultRttMs;
            if (listed && old.Range == range)
            {
                // A heartbeat that only moved the round trip a little (before and after are the same snapshot) keeps the rank.
                bool rttOnly = ReferenceEquals(before, after);
                if (rttOnly && Math.Abs(rtt - old.RttMs) <= RttRefreshFraction * Math.Max(old.RttMs, 1e-9)) return;
                if (old.Key == k) return;
            }
            if (listed) Unlist(id, old);
            var ranked = new Ranked(k, range, rtt);
            _ranked[id] = ranked;
            while (_byLayer.Count < range.End) _byLayer.Add([]);
            for (int l = range.Start; l < range.End; l++) _byLayer[l].Add((k, id));
        }
    }

    private void Unlist(int id, Ranked old)
    {
        for (int l = old.Range.Start; l < old.Range.End; l++) _byLayer[l].Remove((old.Key, id));
        _ranked.Remove(id);
    }
}
