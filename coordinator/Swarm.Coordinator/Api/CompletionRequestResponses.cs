using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Swarm.Coordinator.Api;

/// <summary>Why generation stopped, as OpenAI spells it.</summary>
internal static class FinishReasons
{
    /// <summary><c>max_tokens</c> reached.</summary>
    public const string Length = "length";

    /// <summary>A stop sequence, stop token id or end-of-text token was produced.</summary>
    public const string Stop = "stop";
}

/// <summary>Response of a non-streaming <c>POST /v1/completions</c>.</summary>
internal sealed record CompletionResponse
{
    /// <summary>Job id, e.g. <c>cmpl-…</c>.</summary>
    [JsonPropertyName("id")] public required string Id { get; init; }

    /// <summary>Always <c>text_completion</c>.</summary>
    [JsonPropertyName("object")] public string Object { get; init; } = "text_completion";

    /// <summary>Creation time, Unix seconds.</summary>
    [JsonPropertyName("created")] public required long Created { get; init; }

    /// <summary>Model name.</summary>
    [JsonPropertyName("model")] public required string Model { get; init; }

    /// <summary>One choice (n = 1).</summary>
    [JsonPropertyName("choices")] public required IReadOnlyList<CompletionChoice> Choices { get; init; }

    /// <summary>Token counts.</summary>
    [JsonPropertyName("usage")] public required CompletionUsage Usage { get; init; }

    /// <summary>Swarm extension: how the job ran (stages, timings, recoveries). Absent in plain OpenAI.</summary>
    [JsonPropertyName("swarm")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public SwarmJobInfo? Swarm { get; init; }

    /// <summary>The usual single-choice response.</summary>
    public static CompletionResponse Create(string id, string model, DateTimeOffset created, string text,
        IReadOnlyList<int> tokenIds, string finishReason, int promptTokens) => new()
    {
        Id = id,
        Model = model,
        Created = created.ToUnixTimeSeconds(),
        Choices = [new CompletionChoice { Text = text, Index = 0, FinishReason = finishReason, TokenIds = tokenIds }],
        Usage = new CompletionUsage(promptTokens, tokenIds.Count, promptTokens + tokenIds.Count),
    };
}

/// <summary>One generated continuation.</summary>
internal sealed record CompletionChoice
{
    /// <summary>Generated text (in a stream chunk: the new piece only).</summary>
    [JsonPropertyName("text")] public required string Text { get; init; }

    /// <summary>Choice index (0).</summary>
    [JsonPropertyName("index")] public int Index { get; init; }

    /// <summary>With <c>logprobs</c> in the request: the tokens of <see cref="Text"/> and their log-probabilities; else null.</summary>
    [JsonPropertyName("logprobs")] public CompletionLogprobs? Logprobs { get; init; }

    /// <summary><c>length</c> or <c>stop</c>; null in stream chunks before the last.</summary>
    [JsonPropertyName("finish_reason")] public string? FinishReason { get; init; }

    /// <summary>Extension: the generated token ids (in a stream chunk: the new ones only).</summary>
    [JsonPropertyName("token_ids")] public required IReadOnlyList<int> TokenIds { get; init; }
}

/// <summary>Token counts of a completion.</summary>
/// <param name="PromptTokens">Tokens in the prompt.</param>
/// <param name="CompletionTokens">Tokens generated.</param>
/// <param name="TotalTokens">Their sum.</param>
internal sealed record CompletionUsage(
    [property: JsonPropertyName("prompt_tokens")] int PromptTokens,
    [property: JsonPropertyName("completion_tokens")] int CompletionTokens,
    [property: JsonPropertyName("total_tokens")] int TotalTokens);

/// <summary>
/// One server-sent event of a streaming completion: the same shape as <see cref="CompletionResponse"/>, with the new
/// text and token ids in the choice; <c>finish_reason</c> is set on the last chunk with a choice. With
/// <c>stream_options.include_usage</c> a final chunk follows with no choice and the <c>usage</c>. The last chunk of a
/// stream carries the <c>swarm</c> object.
/// </summary>
internal sealed record CompletionChunk
{
    /// <summary>Job id, the same on every chunk.</summary>
    [JsonPropertyName("id")] public required string Id { get; init; }

    /// <summary>Always <c>text_completion</c> (as OpenAI's completions stream).</summary>
    [JsonPropertyName("object")] public string Object { get; init; } = "text_completion";

    /// <summary>Creation time, Unix seconds.</summary>
    [JsonPropertyName("created")] public required long Created { get; init; }

    /// <summary>Model name.</summary>
    [JsonPropertyName("model")] public required string Model { get; init; }

    /// <summary>One choice with the increment; empty in the usage chunk.</summary>
    [JsonPropertyName("choices")] public required IReadOnlyList<CompletionChoice> Choices { get; init; }

    /// <summary>Token counts, on the usage chunk only.</summary>
    [JsonPropertyName("usage")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public CompletionUsage? Usage { get; init; }

    /// <summary>Swarm extension (stages, timings, recoveries), on the last chunk of the stream only.</summary>
    [JsonPropertyName("swarm")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public SwarmJobInfo? Swarm { get; init; }

    /// <summary>A chunk carrying new text/tokens; pass <paramref name="finishReason"/> and <paramref name="usage"/> on the last one.</summary>
    public static CompletionChunk Create(string id, string model, DateTimeOffset created, string text, IReadOnlyList<int> tokenIds,
        string? finishReason = null, CompletionUsage? usage = null) => new()
    {
        Id = id,
        Model = model,
        Created = created.ToUnixTimeSeconds(),
        Choices = [new CompletionChoice { Text = text, Index = 0, FinishReason = finishReason, TokenIds = tokenIds }],
        Usage = usage,
    };

    /// <summary>The usage chunk that ends a stream with <c>stream_options.include_usage</c>: no choice, the token counts.</summary>
    public static CompletionChunk UsageOnly(string id, string model, DateTimeOffset created, CompletionUsage usage) => new()
    {
        Id = id,
        Model = model,
        Created = created.ToUnixTimeSeconds(),
        Choices = [],
        Usage = usage,
    };
}

/// <summary>JSON and server-sent-event framing of the completion models (source-generated serializers).</summary>
internal static class CompletionWire
{
    /// <summary>The terminating event of a stream.</summary>
    public const string DoneEvent = "data: [DONE]\n\n";

    /// <summary>Content type of a stream.</summary>
    public const string EventStreamContentType = "text/event-stream";

    /// <summary>Serializes a response.</summary>
    public static string ToJson(CompletionResponse response) => JsonSerializer.Serialize(response, CompletionJsonContext.Default.CompletionResponse);

    /// <summary>Serializes an error body.</summary>
    public static string ToJson(OpenAiErrorResponse error) => JsonSerializer.Serialize(error, CompletionJsonContext.Default.OpenAiErrorResponse);

    /// <summary>Serializes a chunk.</summary>
    public static string ToJson(CompletionChunk chunk) => JsonSerializer.Serialize(chunk, CompletionJsonContext.Default.CompletionChunk);

    /// <summary><c>data: {chunk}\n\n</c>.</summary>
    public static string ToEvent(CompletionChunk chunk) => "data: " + ToJson(chunk) + "\n\n";

    /// <summary>An error inside an open stream (after HTTP 200 went out): <c>data: {"error":…}\n\n</c>.</summary>
    public static string ToEvent(OpenAiErrorResponse error) => "data: " + ToJson(error) + "\n\n";

    /// <summary>UTF-8 bytes of an event.</summary>
    public static byte[] Utf8(string sseEvent) => Encoding.UTF8.GetBytes(sseEvent);
}

/// <summary>Source-generated serializers for the API models (usable with ASP.NET's typed results).</summary>
[JsonSourceGenerationOptions(WriteIndented = false)]
[JsonSerializable(typeof(CompletionResponse))]
[JsonSerializable(typeof(CompletionChunk))]
[JsonSerializable(typeof(OpenAiErrorResponse))]
internal sealed partial class CompletionJsonContext : JsonSerializerContext;

/// <summary>Swarm extension of a completion: per-stage mean forward time per token, the job's recoveries and recomputed tokens.</summary>
internal sealed record SwarmJobInfo
{
    [JsonPropertyName("stages")] public required IReadOnlyList<SwarmStageInfo> Stages { get; init; }
    [JsonPropertyName("recoveries")] public int Recoveries { get; init; }
    /// <summary>Tokens generated again on other nodes because a node they went through was banned (spot checks).</summary>
    [JsonPropertyName("recomputed_tokens")] public int RecomputedTokens { get; init; }
    [JsonPropertyName("time_to_first_token_ms")] public double TimeToFirstTokenMs { get; init; }
    [JsonPropertyName("total_ms")] public double TotalMs { get; init; }
    [JsonPropertyName("decode_ms_per_token")] public double DecodeMsPerToken { get; init; }

    /// <summary>With the request extension <c>swarm.hidden_states</c>: the layers' outputs for the prompt, in layer order.</summary>
    [JsonPropertyName("hidden_states")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<HiddenStateInfo>? HiddenStates { get; init; }

    /// <summary>When the coordinator speculated (<c>--speculative</c>): target passes, drafted tokens and accepted ones.</summary>
    [JsonPropertyName("speculative")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public SpeculativeInfo? Speculative { get; init; }
}

/// <summary>A job's speculative decoding: each pass through the pipeline gave its accepted drafts plus one token.</summary>
public sealed record SpeculativeInfo
{
    /// <summary>Passes through the pipeline (target forward passes) while speculating.</summary>
    [JsonPropertyName("passes")] public int Passes { get; init; }

    /// <summary>Drafted tokens the target accepted.</summary>
    [JsonPropertyName("accepted")] public int Accepted { get; init; }

    /// <summary>Drafted tokens sent for verification.</summary>
    [JsonPropertyName("drafted")] public int Drafted { get; init; }
}

/// <summary>One layer's output for the prompt's positions: float32 [T, H] as base64 of its little-endian bytes, row-major.</summary>
internal sealed record HiddenStateInfo
{
    /// <summary>The layer L (0-based): its output before the final LayerNorm, HF's <c>hidden_states[L + 1]</c>.</summary>
    [JsonPropertyName("layer")] public int Layer { get; init; }

    /// <summary>[positions, hidden size]: every prompt position, or 1 for <c>"positions": "last"</c>.</summary>
    [JsonPropertyName("shape")] public required IReadOnlyList<long> Shape { get; init; }

    /// <summary>Always <c>float32</c>.</summary>
    [JsonPropertyName("dtype")] public string DType { get; init; } = "float32";

    /// <summary>Base64 of the little-endian float32 values, row-major.</summary>
    [JsonPropertyName("data")] public required string Data { get; init; }
}

/// <summary>One stage of the route a job took.</summary>
internal sealed record SwarmStageInfo
{
    [JsonPropertyName("node_id")] public int NodeId { get; init; }
    [JsonPropertyName("node")] public string Node { get; init; } = "";
    [JsonPropertyName("layers")] public IReadOnlyList<int> Layers { get; init; } = [];
    [JsonPropertyName("forward_ms")] public double ForwardMs { get; init; }
}
