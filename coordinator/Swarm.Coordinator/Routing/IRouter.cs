using Swarm.Protocol;

namespace Swarm.Coordinator.Routing;

/// <summary>Chooses, per job, the chain of (node, layer range) hops a generation runs through.</summary>
internal interface IRouter
{
    /// <summary>Name used in configuration and logs.</summary>
    string Name { get; }

    /// <summary>The cost model the router ranks by (also the <see cref="RouteCandidateIndex"/>'s).</summary>
    RoutingOptions Options { get; }

    /// <summary>The route covering layers <c>[0, numLayers)</c> with the lowest expected latency, load included.</summary>
    RoutingResult Route(int numLayers, IReadOnlyList<RouteCandidate> candidates);

    /// <summary>The route covering <paramref name="span"/>.</summary>
    RoutingResult Route(LayerRange span, IReadOnlyList<RouteCandidate> candidates);
}
