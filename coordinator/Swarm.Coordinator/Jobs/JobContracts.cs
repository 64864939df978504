using Swarm.Protocol;
using Swarm.Sampling;

namespace Swarm.Coordinator.Jobs;

/// <summary>What a job asks for, in token ids.</summary>
internal sealed record JobSpec(IReadOnlyList<int> Prompt, SamplingOptions Sampling, IReadOnlyList<string> StopSequences)
{
    /// <summary>
    /// Log-probabilities with each token: the number of most likely alternatives per position (0 … 5), or null for none.
    /// Computed on the last stage from the raw logits (before temperature, top-k and top-p).
    /// </summary>
    public int? Logprobs { get; init; }

    /// <summary>Echo the prompt before the completion (with <see cref="Logprobs"/>: its tokens scored, the first with none).</summary>
    public bool Echo { get; init; }

    /// <summary>Transformer layer outputs to return for the prompt's positions; null for none.</summary>
    public HiddenStatesRequest? HiddenStates { get; init; }
}

/// <summary>
/// What a job adds to its output as it runs, for streaming: the token ids generated since the last delta and the text
/// that became safe to show. Text that could begin a stop sequence is held back until it cannot, so a delta may carry
/// ids without text (or, at the end, text without ids); concatenated, a job's deltas give exactly
/// <see cref="JobResult.TokenIds"/> and <see cref="JobResult.Text"/>.
/// </summary>
/// <param name="JobId">The job (<see cref="JobResult.Id"/>).</param>
/// <param name="TokenIds">New token ids: one per generated token, also those of a stop sequence or a stop token.</param>
/// <param name="Text">New text of the completion (possibly empty).</param>
internal sealed record JobDelta(string JobId, IReadOnlyList<int> TokenIds, string Text)
{
    /// <summary>
    /// With <see cref="JobSpec.Logprobs"/>: the tokens whose text this delta shows — their texts concatenated are
    /// <see cref="Text"/>; with <see cref="JobSpec.Echo"/> the first delta holds the prompt's. Null otherwise.
    /// </summary>
    public IReadOnlyList<ShownToken>? Logprobs { get; init; }

    /// <summary>True for the delta that echoes the prompt (<see cref="JobSpec.Echo"/>): no token ids, the prompt's text.</summary>
    public bool IsEcho { get; init; }
}

/// <summary>How a job ended, as every view counts it (<c>/api/swarm</c>, the dashboard, <c>swarm status</c>, <c>swarm_jobs_total</c>).</summary>
internal enum JobOutcome
{
    /// <summary>It finished with a result (length or stop).</summary>
    Completed,
    /// <summary>It was admitted and then failed (no route, too many repairs, a stage rejected a step).</summary>
    Failed,
    /// <summary>Its client went away, while it was queued or running.</summary>
    Cancelled,
    /// <summary>It never ran: the queue was full or it waited the queue timeout.</summary>
    Rejected,
}

/// <summary>
/// How a job ended. <see cref="Text"/> is the UTF-8 of the generated tokens' bytes (an invalid or incomplete sequence,
/// such as a character cut off by the token limit, is U+FFFD), without the text of a final stop token and cut before
/// the first stop sequence; <see cref="TokenIds"/> holds every generated token, including those of the stop.
/// </summary>
internal sealed record JobResult(string Id, IReadOnlyList<int> TokenIds, string Text, string FinishReason, int PromptTokens,
    double TimeToFirstTokenMs, double TotalMs, int Recoveries, IReadOnlyList<StageMean> Stages)
{
    /// <summary>With <see cref="JobSpec.Echo"/>: the prompt's tokens and their texts (with logprobs when asked for); else null.</summary>
    public IReadOnlyList<ShownToken>? Echo { get; init; }

    /// <summary>With <see cref="JobSpec.Logprobs"/>: the completion's shown tokens (their texts concatenated are <see cref="Text"/>); else null.</summary>
    public IReadOnlyList<ShownToken>? Logprobs { get; init; }

    /// <summary>With <see cref="JobSpec.HiddenStates"/>: the layers' outputs, in layer order; else empty.</summary>
    public IReadOnlyList<LayerHiddenStates> HiddenStates { get; init; } = [];

    /// <summary>Tokens the job dropped and generated again on other nodes because a node they went through was banned.</summary>
    public int RecomputedTokens { get; init; }
    /// <summary>When the job speculated: its passes, drafted and accepted tokens; else null.</summary>
    public Speculation.SpeculationCounts? Speculation { get; init; }
}

/// <summary>A stage of the job's (last) route and its mean forward time over decode steps (prefill when there were none).</summary>
internal sealed record StageMean(int NodeId, int LayerStart, int LayerEnd, double ForwardMs);

/// <summary>A job could not run or finish; <see cref="HttpStatus"/> is what the API answers.</summary>
internal sealed class JobFailedException(string message, int httpStatus, string code) : Exception(message)
{
    /// <summary>HTTP status the API answers with: 429 queue full, 503 swarm cannot serve the job now, 500 otherwise.</summary>
    public int HttpStatus { get; } = httpStatus;

    /// <summary>Machine-readable reason, e.g. <c>queue_full</c>, <c>layers_uncovered</c>, <c>recovery_failed</c>.</summary>
    public string Code { get; } = code;
}

/// <summary>Summary of a finished or running job, for status views; <see cref="State"/> is queued, running, done, failed or cancelled.</summary>
internal sealed record JobRecord(string Id, string State, int PromptTokens, int CompletionTokens, double? TtftMs, double? TokensPerSecond,
    int Recoveries, string? Error, DateTimeOffset? FinishedAt);
