using System.Security.Cryptography;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Swarm.Coordinator.Api;

namespace Swarm.Coordinator.Dashboard;

/// <summary>
/// Serves the operator's web dashboard: one self-contained HTML page (inline CSS and script, no CDN, no web
/// fonts) that polls <c>api/swarm</c> every second, relative to where the page is mapped.
/// </summary>
internal static class DashboardEndpoints
{
    /// <summary>Manifest name of the embedded page.</summary>
    public const string ResourceName = "Swarm.Coordinator.Dashboard.dashboard.html";

    /// <summary>
    /// Sent with the page: the browser may load nothing from anywhere (the machines are offline, and node
    /// names come from volunteers), may run only the page's own inline script and fetch only this origin.
    /// </summary>
    public const string ContentSecurityPolicy =
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; " +
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

    private static readonly Lazy<byte[]> s_page = new(LoadPage);
    private static readonly Lazy<string> s_etag = new(() => "\"" + Convert.ToHexStringLower(SHA256.HashData(s_page.Value))[..16] + "\"");

    /// <summary>The page's UTF-8 bytes.</summary>
    public static ReadOnlyMemory<byte> Page => s_page.Value;

    /// <summary>
    /// Maps <c>GET</c>/<c>HEAD</c> <paramref name="pattern"/> (default <c>/</c>) to the dashboard page. The page
    /// fetches <c>api/swarm</c> relative to its own URL, so at <c>/</c> it polls <c>/api/swarm</c>.
    /// </summary>
    public static IEndpointConventionBuilder MapSwarmDashboard(this IEndpointRouteBuilder endpoints, string pattern = "/")
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        return endpoints.MapMethods(pattern, [HttpMethods.Get, HttpMethods.Head], (HttpContext context) =>
        {
            var headers = context.Response.Headers;
            headers.CacheControl = "no-cache";
            headers.ETag = s_etag.Value;
            headers.ContentSecurityPolicy = ContentSecurityPolicy;
            headers.XContentTypeOptions = "nosniff";
            headers["Referrer-Policy"] = "no-referrer";
            if (context.Request.Headers.IfNoneMatch == s_etag.Value)
                return Results.StatusCode(StatusCodes.Status304NotModified);
            return Results.Bytes(s_page.Value, "text/html; charset=utf-8");
        }).WithDisplayName("Swarm dashboard").AllowAnonymous(); // the page holds no data; it asks for a key when api/swarm needs one
    }

    /// <summary>
    /// Maps <c>GET</c> <paramref name="pattern"/> (default <c>/api/swarm</c>) to the JSON of the status that
    /// <paramref name="snapshot"/> returns at each request, serialized with <see cref="SwarmStatusJson"/>.
    /// </summary>
    public static IEndpointConventionBuilder MapSwarmStatus(this IEndpointRouteBuilder endpoints, Func<SwarmStatus> snapshot, string pattern = "/api/swarm")
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        ArgumentNullException.ThrowIfNull(snapshot);
        return endpoints.MapGet(pattern, (HttpContext context) =>
        {
            context.Response.Headers.CacheControl = "no-store";
            return TypedResults.Json(snapshot(), SwarmStatusJson.Default.SwarmStatus);
        }).WithDisplayName("Swarm status JSON");
    }

    private static byte[] LoadPage()
    {
        using var stream = typeof(DashboardEndpoints).Assembly.GetManifestResourceStream(ResourceName)
            ?? throw new InvalidOperationException($"the dashboard page '{ResourceName}' is not embedded in {typeof(DashboardEndpoints).Assembly.GetName().Name}; check the EmbeddedResource item in Swarm.Coordinator.csproj");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }
}
