namespace Swarm.Coordinator.Api;

/// <summary>
/// A validated <c>POST /v1/completions</c> request (OpenAI's completions schema plus <c>top_k</c> and
/// <c>stop_token_ids</c>). Produce it with <see cref="CompletionRequestParser.Parse(string, CompletionValidationContext)"/>;
/// every field is already within range.
/// </summary>
internal sealed record CompletionRequest
{
    /// <summary>The served model's name (a request without <c>model</c> gets it too).</summary>
    public required string Model { get; init; }

    /// <summary>The prompt as text; null when it was given as token ids.</summary>
    public string? PromptText { get; init; }

    /// <summary>The prompt as token ids; null when it was given as text.</summary>
    public IReadOnlyList<int>? PromptTokenIds { get; init; }

    /// <summary>Prompt length in tokens when known (always for ids; for text when the context could count tokens).</summary>
    public int? PromptTokenCount { get; init; }

    /// <summary>New tokens to generate at most, 1 … context length (0 with <see cref="Echo"/> or <see cref="HiddenStates"/>). Default 16 (OpenAI's).</summary>
    public int MaxTokens { get; init; } = CompletionRequestParser.DefaultMaxTokens;

    /// <summary>Sampling temperature, 0 … 2; 0 means greedy. Default 1.</summary>
    public double Temperature { get; init; } = 1;

    /// <summary>Nucleus sampling mass, 0 &lt; p ≤ 1. Default 1 (off).</summary>
    public double TopP { get; init; } = 1;

    /// <summary>Top-k sampling, ≥ 0; 0 means off. Default 0.</summary>
    public int TopK { get; init; }

    /// <summary>Seed of the job's sampling RNG; null lets the coordinator choose one.</summary>
    public long? Seed { get; init; }

    /// <summary>Stop sequences (text); generation ends before any of them. Default none.</summary>
    public IReadOnlyList<string> Stop { get; init; } = [];

    /// <summary>Token ids that end generation (extension field <c>stop_token_ids</c>). Default none.</summary>
    public IReadOnlyList<int> StopTokenIds { get; init; } = [];

    /// <summary>Stream tokens as server-sent events. Default false.</summary>
    public bool Stream { get; init; }

    /// <summary>
    /// <c>stream_options.include_usage</c>: end the stream with a chunk whose <c>choices</c> is empty and whose
    /// <c>usage</c> gives the token counts, as OpenAI does. Only with <see cref="Stream"/>. Default false.
    /// </summary>
    public bool IncludeUsage { get; init; }

    /// <summary>
    /// <c>logprobs</c>: return each token's log-probability and this many most likely alternatives per position (0 … 5);
    /// null for none (the default).
    /// </summary>
    public int? Logprobs { get; init; }

    /// <summary><c>echo</c>: return the prompt before the completion (with <see cref="Logprobs"/>: its tokens' log-probabilities). Default false.</summary>
    public bool Echo { get; init; }

    /// <summary>Extension <c>swarm.hidden_states</c>: transformer layer outputs to return for the prompt; null for none.</summary>
    public HiddenStatesSelection? HiddenStates { get; init; }
}

/// <summary>Which layers' outputs a request asks for (<c>swarm.hidden_states</c>), and at which prompt positions.</summary>
/// <param name="Layers">Layer indices, 0-based, ascending, distinct: the output of transformer layer L before the final LayerNorm (HF's <c>hidden_states[L + 1]</c>).</param>
/// <param name="AllPositions">True for every prompt position (<c>"all"</c>, the default), false for the last (<c>"last"</c>).</param>
internal sealed record HiddenStatesSelection(IReadOnlyList<int> Layers, bool AllPositions);

/// <summary>What validation needs to know about the served model.</summary>
internal sealed record CompletionValidationContext
{
    /// <summary>The one model name this coordinator serves.</summary>
    public required string ModelName { get; init; }

    /// <summary>Context length in tokens (prompt + generated must fit).</summary>
    public required int ContextLength { get; init; }

    /// <summary>Vocabulary size: token ids must lie in <c>[0, VocabSize)</c>.</summary>
    public required int VocabSize { get; init; }

    /// <summary>Counts the tokens of a text prompt; when null, text prompts are not length-checked here.</summary>
    public Func<string, int>? CountTokens { get; init; }

    /// <summary>Transformer layers of the model (for <c>swarm.hidden_states</c>); 0 when hidden states are not offered. Default 0.</summary>
    public int NumLayers { get; init; }

    /// <summary>Hidden size of the model (the size limit of <c>swarm.hidden_states</c>). Default 0.</summary>
    public int HiddenSize { get; init; }

    /// <summary>Most stop sequences accepted. Default 16 (OpenAI allows 4).</summary>
    public int MaxStopSequences { get; init; } = 16;
}

/// <summary>One problem with a request.</summary>
/// <param name="Field">The JSON field (<c>prompt</c>, <c>max_tokens</c>, …) or <c>body</c> for the document itself.</param>
/// <param name="Message">What is wrong, for people.</param>
/// <param name="Code">Machine code: <c>invalid_json</c>, <c>invalid_encoding</c>, <c>invalid_type</c>, <c>invalid_value</c>, <c>missing_required_parameter</c>,
/// <c>model_not_found</c>, <c>context_length_exceeded</c> or <c>unsupported_parameter</c>.</param>
internal sealed record ValidationError(string Field, string Message, string Code);

/// <summary>Outcome of parsing: a request, or every problem found.</summary>
/// <param name="Request">The request when valid; null otherwise.</param>
/// <param name="Errors">All problems (empty when valid).</param>
internal sealed record CompletionParseResult(CompletionRequest? Request, IReadOnlyList<ValidationError> Errors)
{
    /// <summary>True when <see cref="Request"/> is set.</summary>
    public bool IsValid => Request is not null;
}
