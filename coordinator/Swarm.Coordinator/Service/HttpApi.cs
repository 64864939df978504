using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Swarm.Coordinator.Api;
using Swarm.Coordinator.Dashboard;
using Swarm.Coordinator.Jobs;
using Swarm.Protocol;
using Swarm.Sampling;

namespace Swarm.Coordinator.Service;

/// <summary>
/// The coordinator's HTTP API: OpenAI-compatible <c>POST /v1/completions</c> (JSON or server-sent events), the model
/// endpoints (<see cref="ModelEndpoints"/>) and <c>GET /healthz</c>. Every error answers in OpenAI's error shape:
/// malformed requests get 400 listing every problem, an uncovered swarm 503 naming the layers, a full queue 429,
/// unknown URLs and methods 404/405 (<see cref="HttpErrorBodies"/>).
/// </summary>
internal static class HttpApi
{
    /// <summary>Largest request body accepted (a prompt of token ids for the longest context fits easily).</summary>
    public const int MaxBodyBytes = 4 << 20;

    /// <summary>Maps the API's endpoints; errors without a body of their own get one from <see cref="HttpErrorBodies"/>.</summary>
    public static void Map(IEndpointRouteBuilder app, SwarmCoordinator swarm, JobRunner jobs)
    {
        var bodies = new RequestBodyReader(app.ServiceProvider.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(HttpApi).FullName!));
        app.MapPost("/v1/completions", (HttpContext ctx) => CompletionsAsync(ctx, swarm, jobs, bodies));
        app.MapSwarmStatus(() => StatusSnapshot.Build(swarm, jobs));
        app.MapSwarmDashboard();
        ModelEndpoints.Map(app, swarm);
        app.MapGet("/healthz", () =>
        {
            var cov = swarm.Registry.ServingCoverage(swarm.Config.NumLayers);
            return Results.Json(new { status = "ok", covered = cov.IsCovered, uncovered = cov.IsCovered ? null : cov.DescribeUncovered(), queued = jobs.Queued, running = jobs.Running });
        }).AllowAnonymous(); // liveness probes carry no key
    }

    private static async Task CompletionsAsync(HttpContext ctx, SwarmCoordinator swarm, JobRunner jobs, RequestBodyReader bodies)
    {
        var ct = ctx.RequestAborted;
        if (await bodies.ReadAsync(ctx) is not { } body) return;
        var tokenizer = swarm.Tokenizer;
        var parse = CompletionRequestParser.Parse(body, new CompletionValidationContext
        {
            ModelName = swarm.ModelName,
            ContextLength = swarm.Config.MaxPositionEmbeddings,
            VocabSize = swarm.Config.VocabSize,
            NumLayers = swarm.Config.NumLayers,
            HiddenSize = swarm.Config.HiddenSize,
            CountTokens = tokenizer is null ? null : text => tokenizer.Encode(text).Count,
        });
        if (!parse.IsValid)
        {
            await WriteErrorAsync(ctx, 400, OpenAiErrorResponse.InvalidRequest(parse.Errors));
            return;
        }
        var req = parse.Request!;
        IReadOnlyList<int> prompt;
        if (req.PromptTokenIds is { } ids) prompt = ids;
        else if (tokenizer is null)
        {
            await WriteErrorAsync(ctx, 400, OpenAiErrorResponse.InvalidRequest([new ValidationError("prompt",
                $"model '{swarm.ModelName}' has no tokenizer.json: send the prompt as an array of token ids", "no_tokenizer")]));
            return;
        }
        else prompt = tokenizer.Encode(req.PromptText!);
        if (prompt.Count == 0)
        {
            await WriteErrorAsync(ctx, 400, OpenAiErrorResponse.InvalidRequest([new ValidationError("prompt", "the prompt is empty", "empty_prompt")]));
            return;
        }
        var spec = new JobSpec(prompt, new SamplingOptions
        {
            MaxNewTokens = req.MaxTokens,
            Temperature = req.Temperature,
            TopK = req.TopK,
            TopP = req.TopP,
            Seed = req.Seed,
            StopTokenIds = req.StopTokenIds,
        }, req.Stop)
        {
            Logprobs = req.Logprobs,
            Echo = req.Echo,
            HiddenStates = req.HiddenStates is { } hs ? new HiddenStatesRequest { Layers = [.. hs.Layers], AllPositions = hs.AllPositions } : null,
        };
        var created = DateTimeOffset.UtcNow;
        if (req.Stream)
        {
            await new CompletionStream(ctx, swarm.ModelName, created, req.IncludeUsage, tokenizer).RunAsync(jobs, spec, r => JobInfo(swarm, r), ct);
            return;
        }
        try
        {
            var r = await jobs.RunAsync(spec, null, ct);
            string echoed = r.Echo is { } echo ? string.Concat(echo.Select(e => e.Text)) : "";
            var resp = CompletionResponse.Create(r.Id, swarm.ModelName, created, echoed + r.Text, r.TokenIds, r.FinishReason, r.PromptTokens)
                with { Swarm = JobInfo(swarm, r) };
            if (req.Logprobs is not null)
                resp = resp with { Choices = [resp.Choices[0] with { Logprobs = CompletionLogprobs.Build([.. r.Echo ?? [], .. r.Logprobs ?? []], tokenizer, 0, out _) }] };
            ctx.Response.ContentType = "application/json";
            await ctx.Response.WriteAsync(CompletionWire.ToJson(resp), ct);
        }
        catch (JobFailedException e) { await WriteErrorAsync(ctx, e.HttpStatus, ErrorOf(e)); }
        catch (OperationCanceledException) when (ct.IsCancellationRequested) { }
    }

    /// <summary>The <c>swarm</c> extension of a response: stages of the route with their mean forward time per token.</summary>
    public static SwarmJobInfo JobInfo(SwarmCoordinator swarm, JobResult r) => new()
    {
        Stages = r.Stages.Select(s => new SwarmStageInfo
        {
            NodeId = s.NodeId,
            Node = swarm.Registry.Get(s.NodeId)?.Info.Name ?? $"node-{s.NodeId}",
            Layers = [s.LayerStart, s.LayerEnd],
            ForwardMs = Math.Round(s.ForwardMs, 3),
        }).ToList(),
        Recoveries = r.Recoveries,
        RecomputedTokens = r.RecomputedTokens,
        TimeToFirstTokenMs = Math.Round(r.TimeToFirstTokenMs, 3),
        TotalMs = Math.Round(r.TotalMs, 3),
        DecodeMsPerToken = r.TokenIds.Count > 1 ? Math.Round((r.TotalMs - r.TimeToFirstTokenMs) / (r.TokenIds.Count - 1), 3) : 0,
        HiddenStates = r.HiddenStates.Count == 0 ? null : [.. r.HiddenStates.Select(h => new HiddenStateInfo
        {
            Layer = h.Layer, Shape = h.Data.Shape, Data = Convert.ToBase64String(h.Data.Data.Span),
        })],
        Speculative = r.Speculation is { } sp ? new SpeculativeInfo { Passes = sp.Passes, Accepted = sp.Accepted, Drafted = sp.Drafted } : null,
    };

    /// <summary>The error body of a job that could not run or finish: 503, 429, or a server error.</summary>
    internal static OpenAiErrorResponse ErrorOf(JobFailedException e) => e.HttpStatus switch
    {
        503 => OpenAiErrorResponse.ServiceUnavailable(e.Message, e.Code),
        429 => OpenAiErrorResponse.Overloaded(e.Message),
        _ => OpenAiErrorResponse.ServerError(e.Message, e.Code),
    };

    /// <summary>Answers <paramref name="status"/> with <paramref name="error"/> as the JSON body.</summary>
    public static async Task WriteErrorAsync(HttpContext ctx, int status, OpenAiErrorResponse error)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        await ctx.Response.WriteAsync(CompletionWire.ToJson(error), Encoding.UTF8, CancellationToken.None);
    }
}
