using Microsoft.AspNetCore.Http;
using Swarm.Coordinator.Api;
using Swarm.Coordinator.Jobs;
using Swarm.Tokenization;

namespace Swarm.Coordinator.Service;

/// <summary>
/// The server-sent events of one streaming completion: a chunk per <see cref="JobDelta"/> (the token ids generated and
/// the text released — never any part of a stop sequence), a chunk with the finish reason, with
/// <c>stream_options.include_usage</c> OpenAI's usage chunk (no choice, the token counts), then <c>[DONE]</c>. The last
/// chunk before <c>[DONE]</c> carries the <c>swarm</c> object (with <c>swarm.hidden_states</c>, those too). With <c>echo</c>
/// the first chunk carries the prompt's text (no token ids); with <c>logprobs</c> every chunk carries the logprobs of the
/// tokens whose text it shows. A job that fails before its first chunk answers with its
/// HTTP status and error body; after it, with an error event.
/// </summary>
internal sealed class CompletionStream(HttpContext ctx, string model, DateTimeOffset created, bool includeUsage, ITextTokenizer? tokenizer)
{
    private bool _started;
    private int _textOffset;   // code points of text sent so far: where the next chunk's logprobs begin

    /// <summary>Runs <paramref name="spec"/> on <paramref name="jobs"/> and streams it; <paramref name="describe"/> gives the swarm object of the result.</summary>
    public async Task RunAsync(JobRunner jobs, JobSpec spec, Func<JobResult, SwarmJobInfo> describe, CancellationToken ct)
    {
        ctx.Response.ContentType = CompletionWire.EventStreamContentType;
        ctx.Response.Headers.CacheControl = "no-cache";
        try
        {
            var r = await jobs.RunAsync(spec, d => WriteAsync(Chunk(d), ct), ct);
            var finish = CompletionChunk.Create(r.Id, model, created, "", [], r.FinishReason);
            if (includeUsage)
            {
                await WriteAsync(finish, ct);
                var usage = new CompletionUsage(r.PromptTokens, r.TokenIds.Count, r.PromptTokens + r.TokenIds.Count);
                await WriteAsync(CompletionChunk.UsageOnly(r.Id, model, created, usage) with { Swarm = describe(r) }, ct);
            }
            else await WriteAsync(finish with { Swarm = describe(r) }, ct);
            await ctx.Response.WriteAsync(CompletionWire.DoneEvent, ct);
        }
        catch (JobFailedException e)
        {
            if (!_started) await HttpApi.WriteErrorAsync(ctx, e.HttpStatus, HttpApi.ErrorOf(e));
            else await ctx.Response.WriteAsync(CompletionWire.ToEvent(HttpApi.ErrorOf(e)), CancellationToken.None);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested) { }
    }

    /// <summary>A delta's chunk; with logprobs, its tokens' (their texts are the chunk's text).</summary>
    private CompletionChunk Chunk(JobDelta d)
    {
        var chunk = CompletionChunk.Create(d.JobId, model, created, d.Text, d.TokenIds);
        if (d.Logprobs is not { } shown) return chunk;
        var logprobs = CompletionLogprobs.Build(shown, tokenizer, _textOffset, out _textOffset);
        return chunk with { Choices = [chunk.Choices[0] with { Logprobs = logprobs }] };
    }

    private async ValueTask WriteAsync(CompletionChunk chunk, CancellationToken ct)
    {
        if (!_started)
        {
            _started = true;
            await ctx.Response.StartAsync(ct);
        }
        await ctx.Response.WriteAsync(CompletionWire.ToEvent(chunk), ct);
        await ctx.Response.Body.FlushAsync(ct);
    }
}
