using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;
using Swarm.Coordinator.Api;
using Swarm.Coordinator.Service;
using Swarm.Transport;

namespace Swarm.Coordinator.Security;

/// <summary>
/// Answers a request without the key its endpoint needs (<see cref="HttpAccessPolicy.KeyFor"/>) with 401 in OpenAI's
/// error shape and <c>WWW-Authenticate: Bearer</c> (RFC 6750), before the endpoint runs. Refusals are logged at most
/// once per interval with a count of the rest (anyone can send them); the key presented is never logged or echoed.
/// </summary>
internal static partial class BearerKeyMiddleware
{
    private enum Outcome { Accepted, Missing, Malformed, Wrong }

    /// <summary>Adds the check; call it after the status-code pages and before the endpoints run.</summary>
    public static IApplicationBuilder UseBearerKeys(this IApplicationBuilder app, HttpAccessKeys keys)
    {
        ArgumentNullException.ThrowIfNull(app);
        ArgumentNullException.ThrowIfNull(keys);
        var logger = app.ApplicationServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(BearerKeyMiddleware).FullName!);
        var repeated = new RepeatedLogLimiter();
        return app.Use((ctx, next) =>
        {
            var which = HttpAccessPolicy.KeyFor(ctx.GetEndpoint());
            var set = which switch { EndpointKey.Api => keys.Api, EndpointKey.Metrics => keys.Metrics, _ => BearerKeySet.None };
            if (set.IsEmpty) return next(ctx);
            var outcome = Check(ctx.Request.Headers.Authorization, set);
            if (outcome == Outcome.Accepted) return next(ctx);
            if (repeated.ShouldLog(logger, "refused HTTP request"))
                LogRefused(logger, ctx.Request.Method, Shorten(ctx.Request.Path.Value), ctx.Connection.RemoteIpAddress?.ToString() ?? "?", outcome.ToString().ToLowerInvariant());
            return RefuseAsync(ctx, outcome, which);
        });
    }

    private static Outcome Check(StringValues authorization, BearerKeySet keys)
    {
        if (authorization.Count == 0) return Outcome.Missing;
        if (authorization.Count > 1) return Outcome.Malformed;
        ReadOnlySpan<char> value = authorization[0];
        const string scheme = "Bearer ";
        if (!value.StartsWith(scheme, StringComparison.OrdinalIgnoreCase)) return Outcome.Malformed;
        var token = value[scheme.Length..].Trim();
        if (token.IsEmpty) return Outcome.Malformed;
        return keys.Contains(token) ? Outcome.Accepted : Outcome.Wrong;
    }

    private static Task RefuseAsync(HttpContext ctx, Outcome outcome, EndpointKey which)
    {
        string wanted = which == EndpointKey.Metrics ? "the coordinator's metrics key (--metrics-key)" : "one of the coordinator's API keys (--api-key)";
        var error = outcome switch
        {
            Outcome.Missing => OpenAiErrorResponse.InvalidRequest(
                $"No API key provided: send {wanted} in an Authorization header, `Authorization: Bearer KEY`", "missing_api_key"),
            Outcome.Malformed => OpenAiErrorResponse.InvalidRequest(
                $"The Authorization header must be one `Bearer KEY` with {wanted}", "invalid_authorization_header"),
            _ => OpenAiErrorResponse.InvalidRequest($"Incorrect API key provided: this endpoint takes {wanted}", "invalid_api_key"),
        };
        ctx.Response.Headers.WWWAuthenticate = outcome == Outcome.Missing ? "Bearer" : "Bearer error=\"invalid_token\"";
        return HttpApi.WriteErrorAsync(ctx, StatusCodes.Status401Unauthorized, error);
    }

    private static string Shorten(string? path) => path is null ? "" : path.Length <= 120 ? path : path[..120] + "…";

    [LoggerMessage(130, LogLevel.Warning, "refused HTTP {Method} {Path} from {Client}: {Reason} key")]
    private static partial void LogRefused(ILogger logger, string method, string path, string client, string reason);
}
