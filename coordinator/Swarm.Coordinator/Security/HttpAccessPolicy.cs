using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Swarm.Coordinator.Security;

/// <summary>Which bearer key an HTTP endpoint asks for.</summary>
internal enum EndpointKey
{
    /// <summary>None: the endpoint is open (marked <c>AllowAnonymous()</c>: <c>/healthz</c>, the dashboard page).</summary>
    None,

    /// <summary>An API key (<c>--api-key</c>): every endpoint not marked otherwise, and every unknown URL.</summary>
    Api,

    /// <summary>The metrics key (<c>--metrics-key</c>): <c>/metrics</c>, marked <see cref="HttpAccessPolicy.RequireMetricsKey{TBuilder}"/>.</summary>
    Metrics,
}

/// <summary>
/// Decides from the endpoint routing matched, not from the raw path, which key a request needs — so no spelling of a
/// URL (case, slashes, encoding) reaches a guarded endpoint without its key. What is not marked needs an API key:
/// a new endpoint is guarded until someone opens it on purpose.
/// </summary>
internal static class HttpAccessPolicy
{
    /// <summary>Endpoint metadata: guarded by the metrics key instead of the API keys.</summary>
    public sealed class MetricsKeyMetadata
    {
        internal static readonly MetricsKeyMetadata Instance = new();

        private MetricsKeyMetadata() { }
    }

    /// <summary>Marks the endpoint as guarded by <c>--metrics-key</c> (open when none is set).</summary>
    public static TBuilder RequireMetricsKey<TBuilder>(this TBuilder builder) where TBuilder : IEndpointConventionBuilder =>
        builder.WithMetadata(MetricsKeyMetadata.Instance);

    /// <summary>The key a request to <paramref name="endpoint"/> (null: no route matched) needs.</summary>
    public static EndpointKey KeyFor(Endpoint? endpoint)
    {
        if (endpoint?.Metadata.GetMetadata<IAllowAnonymous>() is not null) return EndpointKey.None;
        if (endpoint?.Metadata.GetMetadata<MetricsKeyMetadata>() is not null) return EndpointKey.Metrics;
        return EndpointKey.Api;
    }
}
