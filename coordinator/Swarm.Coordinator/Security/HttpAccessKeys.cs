using Swarm.Coordinator.Service;

namespace Swarm.Coordinator.Security;

/// <summary>The keys the coordinator's HTTP endpoints accept; an empty set leaves its endpoints open.</summary>
/// <param name="Api">Keys of <see cref="EndpointKey.Api"/> endpoints (<c>--api-key</c>).</param>
/// <param name="Metrics">Key of <c>/metrics</c> (<c>--metrics-key</c>).</param>
internal sealed record HttpAccessKeys(BearerKeySet Api, BearerKeySet Metrics)
{
    /// <summary>The keys of <paramref name="options"/>.</summary>
    public static HttpAccessKeys From(CoordinatorOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return new HttpAccessKeys(new BearerKeySet(options.ApiKeys), new BearerKeySet([options.MetricsKey]));
    }
}
