using Swarm.Sampling;

namespace Swarm.Coordinator.Jobs;

/// <summary>What a job asks for, in token ids.</summary>
public sealed record JobSpec(IReadOnlyList<int> Prompt, SamplingOptions Sampling, IReadOnlyList<string> StopSequences);

/// <summary>How a job ended.</summary>
public sealed record JobResult(string Id, IReadOnlyList<int> TokenIds, string Text, string FinishReason, int PromptTokens,
    double TimeToFirstTokenMs, double TotalMs, int Recoveries, IReadOnlyList<StageMean> Stages);

/// <summary>A stage of the job's (last) route and its mean forward time over decode steps (prefill when there were none).</summary>
public sealed record StageMean(int NodeId, int LayerStart, int LayerEnd, double ForwardMs);

/// <summary>A job could not run or finish; <see cref="HttpStatus"/> is what the API answers.</summary>
public sealed class JobFailedException(string message, int httpStatus, string code) : Exception(message)
{
    /// <summary>HTTP status the API answers with: 429 queue full, 503 swarm cannot serve the job now, 500 otherwise.</summary>
    public int HttpStatus { get; } = httpStatus;

    /// <summary>Machine-readable reason, e.g. <c>queue_full</c>, <c>layers_uncovered</c>, <c>recovery_failed</c>.</summary>
    public string Code { get; } = code;
}

/// <summary>Summary of a finished or running job, for status views.</summary>
public sealed record JobRecord(string Id, string State, int PromptTokens, int CompletionTokens, double? TtftMs, double? TokensPerSecond,
    int Recoveries, string? Error, DateTimeOffset? FinishedAt);
