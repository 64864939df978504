using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.WebUtilities;
using Swarm.Coordinator.Api;

namespace Swarm.Coordinator.Service;

/// <summary>
/// Gives every error that the framework answers without a body — 404 for an unknown URL (such as
/// <c>/v1/embeddings</c>), 405 for a method a route does not take — OpenAI's error shape, as the endpoints give their own.
/// </summary>
internal static class HttpErrorBodies
{
    /// <summary>Adds the middleware; call it before the endpoints are mapped.</summary>
    public static IApplicationBuilder UseOpenAiErrorBodies(this IApplicationBuilder app) =>
        app.UseStatusCodePages(context => HttpApi.WriteErrorAsync(context.HttpContext, context.HttpContext.Response.StatusCode, Describe(context.HttpContext)));

    private static OpenAiErrorResponse Describe(HttpContext ctx)
    {
        string target = $"{ctx.Request.Method} {ctx.Request.Path}";
        int status = ctx.Response.StatusCode;
        return status switch
        {
            StatusCodes.Status404NotFound => OpenAiErrorResponse.InvalidRequest(
                $"Invalid URL ({target}): this server answers POST /v1/completions, GET /v1/models and GET /v1/models/{{model}}", "unknown_url"),
            StatusCodes.Status405MethodNotAllowed => OpenAiErrorResponse.InvalidRequest(
                $"Method not allowed ({target}): {ctx.Request.Path} takes {ctx.Response.Headers.Allow}", "method_not_allowed"),
            >= 500 => OpenAiErrorResponse.ServerError($"{ReasonPhrases.GetReasonPhrase(status)} ({target})"),
            _ => OpenAiErrorResponse.InvalidRequest($"{ReasonPhrases.GetReasonPhrase(status)} ({target})", $"http_{status}"),
        };
    }
}
