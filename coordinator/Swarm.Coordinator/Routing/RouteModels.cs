using Swarm.Coordinator.Membership;
using Swarm.Protocol;

namespace Swarm.Coordinator.Routing;

/// <summary>A serving node the router may send a job through.</summary>
internal sealed record RouteCandidate
{
    /// <summary>Node id.</summary>
    public required int NodeId { get; init; }

    /// <summary>Layers the node holds; a hop may use any sub-range of it.</summary>
    public required LayerRange Range { get; init; }

    /// <summary>Tokens per second through one layer (see <see cref="NodeInfo.LayerThroughput"/>).</summary>
    public required double LayerThroughput { get; init; }

    /// <summary>Round-trip time to the node in milliseconds; null when not measured yet (the router assumes a default).</summary>
    public double? RttMs { get; init; }

    /// <summary>Jobs currently routed through the node.</summary>
    public int InFlight { get; init; }

    /// <summary>True when the failure detector suspects the node: used only if nothing else serves those layers cheaply.</summary>
    public bool Suspect { get; init; }

    /// <summary>
    /// The links this node measured to the nodes it handed steps to, by the receiving node's id (its heartbeats'
    /// <see cref="LinkReport"/>s); a hop from this node to one of them costs the link's round trip.
    /// </summary>
    public IReadOnlyDictionary<int, LinkReport> Links { get; init; } = new Dictionary<int, LinkReport>();

    /// <summary>The routable view of a registry node; null when it cannot take jobs (not serving, dead, no range, banned).</summary>
    public static RouteCandidate? From(NodeSnapshot node)
    {
        ArgumentNullException.ThrowIfNull(node);
        // A banned node stays in the registry (serving, until its disconnection lands): a job rewound by its ban must not be routed back to it.
        if (node.Banned || node.RoutableRange is not LayerRange r) return null;
        return new RouteCandidate
        {
            NodeId = node.Id,
            Range = r,
            LayerThroughput = node.Info.LayerThroughput,
            RttMs = node.RttMs,
            InFlight = node.InFlight,
            Suspect = node.Health == NodeHealth.Suspect,
            Links = node.LinksByNode,
        };
    }

    /// <summary>Routable candidates among <paramref name="nodes"/>.</summary>
    public static IReadOnlyList<RouteCandidate> FromAll(IEnumerable<NodeSnapshot> nodes) =>
        [.. nodes.Select(From).OfType<RouteCandidate>()];
}

/// <summary>One stage of a route: <paramref name="NodeId"/> runs <paramref name="Layers"/>.</summary>
internal sealed record RouteHop(int NodeId, LayerRange Layers);

/// <summary>A chain of hops covering a contiguous span of layers in order.</summary>
/// <param name="Hops">Hops in pipeline order; each starts where the previous ended.</param>
/// <param name="ExpectedCostMs">Expected latency of one decode step along the route, in milliseconds.</param>
internal sealed record Route(IReadOnlyList<RouteHop> Hops, double ExpectedCostMs)
{
    /// <summary>The layers covered, <c>[first hop start, last hop end)</c>.</summary>
    public LayerRange Span => new(Hops[0].Layers.Start, Hops[^1].Layers.End);

    /// <summary>Ids of the nodes on the route, in order.</summary>
    public IEnumerable<int> NodeIds => Hops.Select(h => h.NodeId);

    /// <summary>"1[0:4) → 2[4:12)" (node ids and their layers) for logs.</summary>
    public override string ToString() => string.Join(" → ", Hops.Select(h => $"{h.NodeId}[{h.Layers.Start}:{h.Layers.End})"));
}

/// <summary>Outcome of routing: a route, or the layers nobody serves.</summary>
/// <param name="Route">The chosen route; null when some layers are not served.</param>
/// <param name="Uncovered">Layers no candidate holds (empty on success).</param>
internal sealed record RoutingResult(Route? Route, IReadOnlyList<LayerRange> Uncovered)
{
    /// <summary>True when a route was found.</summary>
    public bool Success => Route is not null;
}
