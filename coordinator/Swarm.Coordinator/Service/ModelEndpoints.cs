using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Swarm.Coordinator.Api;

namespace Swarm.Coordinator.Service;

/// <summary>
/// OpenAI's model endpoints for the one model a coordinator serves — <c>GET /v1/models</c> and
/// <c>GET /v1/models/{model}</c> (404 <c>model_not_found</c> for any other id) — and <c>POST /v1/chat/completions</c>,
/// which answers 400: Pythia models are base models without a chat template (as vLLM answers for them).
/// </summary>
internal static class ModelEndpoints
{
    /// <summary>Maps the endpoints for <paramref name="swarm"/>'s model.</summary>
    public static void Map(IEndpointRouteBuilder app, SwarmCoordinator swarm)
    {
        ArgumentNullException.ThrowIfNull(app);
        ArgumentNullException.ThrowIfNull(swarm);
        app.MapGet("/v1/models", () => Results.Json(new { @object = "list", data = new[] { Model(swarm) } }));
        // Hub-style ids hold a slash (EleutherAI/pythia-70m): the catch-all keeps it in the id.
        app.MapGet("/v1/models/{**model}", (HttpContext ctx, string model) => model == swarm.ModelName
            ? ctx.Response.WriteAsJsonAsync(Model(swarm))
            : HttpApi.WriteErrorAsync(ctx, StatusCodes.Status404NotFound, OpenAiErrorResponse.InvalidRequest(
                $"The model '{model}' does not exist here; this swarm serves '{swarm.ModelName}'", "model_not_found", "model")));
        app.MapPost("/v1/chat/completions", (HttpContext ctx) => HttpApi.WriteErrorAsync(ctx, StatusCodes.Status400BadRequest,
            OpenAiErrorResponse.InvalidRequest(
                $"The model '{swarm.ModelName}' is a base model without a chat template, so chat messages cannot be turned into a prompt; " +
                "send the text as a prompt to POST /v1/completions", "chat_template_missing")));
    }

    private static object Model(SwarmCoordinator swarm) =>
        new { id = swarm.ModelName, @object = "model", created = swarm.StartedAt.ToUnixTimeSeconds(), owned_by = "swarm" };
}
