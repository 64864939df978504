using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Swarm.Coordinator.Api;

/// <summary>
/// Parses and validates a <c>POST /v1/completions</c> body with <see cref="JsonDocument"/>, field by field, so that
/// every problem is reported at once (a typed deserializer stops at the first). Unknown fields are ignored, and
/// <c>null</c> means "use the default", as OpenAI does.
/// </summary>
internal static class CompletionRequestParser
{
    /// <summary><c>max_tokens</c> when the request leaves it out (OpenAI's default).</summary>
    public const int DefaultMaxTokens = 16;

    /// <summary>Most alternatives <c>logprobs</c> may ask for per position (OpenAI's limit).</summary>
    public const int MaxLogprobs = 5;

    /// <summary>Requests are nearly flat (a prompt array may hold one nested array), so deep nesting is refused early.</summary>
    private static readonly JsonDocumentOptions DocumentOptions = new() { MaxDepth = 8 };

    /// <summary>Parses a UTF-8 JSON body.</summary>
    public static CompletionParseResult Parse(ReadOnlyMemory<byte> utf8Json, CompletionValidationContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        // JsonDocument checks UTF-8 only when a string is read (and then throws), so the whole body is checked first.
        if (FirstInvalidUtf8Byte(utf8Json.Span) is int bad)
            return Fail(new ValidationError("body", string.Create(CultureInfo.InvariantCulture,
                $"the body is not valid UTF-8 (byte {bad} begins an invalid sequence); send JSON encoded as UTF-8"), "invalid_encoding"));
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(utf8Json, DocumentOptions);
        }
        catch (JsonException e)
        {
            return Fail(new ValidationError("body", $"invalid JSON: {e.Message}", "invalid_json"));
        }
        using (doc) return Validate(doc.RootElement, context);
    }

    /// <summary>Parses a JSON body given as a string.</summary>
    public static CompletionParseResult Parse(string json, CompletionValidationContext context) =>
        Parse(Encoding.UTF8.GetBytes(json ?? ""), context);

    private static CompletionParseResult Fail(params ValidationError[] errors) => new(null, errors);

    private static CompletionParseResult Validate(JsonElement root, CompletionValidationContext ctx)
    {
        if (root.ValueKind != JsonValueKind.Object)
            return Fail(new ValidationError("body", $"the request body must be a JSON object, not {Kind(root)}", "invalid_type"));

        var errors = new List<ValidationError>();
        void Error(string field, string message, string code = "invalid_value") => errors.Add(new ValidationError(field, message, code));
        JsonElement? Get(string name) =>
            root.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;
        // Valid UTF-8 can still escape an unpaired surrogate (\ud800), which no .NET string may hold: reading it throws.
        string? Text(string field, JsonElement e)
        {
            try { return e.GetString(); }
            catch (InvalidOperationException)
            {
                Error(field, "contains an unpaired UTF-16 surrogate escape (\\uD800–\\uDFFF), which is not text");
                return null;
            }
        }

        // model
        string model = ctx.ModelName;
        if (Get("model") is JsonElement m)
        {
            if (m.ValueKind != JsonValueKind.String) Error("model", $"must be a string, not {Kind(m)}", "invalid_type");
            else if (Text("model", m) is string name && name != ctx.ModelName)
                Error("model", $"the model '{name}' is not served here; available: '{ctx.ModelName}'", "model_not_found");
        }

        // prompt
        string? promptText = null;
        List<int>? promptIds = null;
        if (Get("prompt") is not JsonElement p)
        {
            Error("prompt", "is required: a string, or an array of token ids", "missing_required_parameter");
        }
        else if (p.ValueKind == JsonValueKind.String)
        {
            promptText = Text("prompt", p);
            if (promptText is { Length: 0 }) Error("prompt", "must not be empty");
        }
        else if (p.ValueKind == JsonValueKind.Array)
        {
            var items = p.EnumerateArray().ToList();
            if (items.Count == 0) Error("prompt", "must not be empty");
            else if (items.All(i => i.ValueKind == JsonValueKind.Number)) promptIds = TokenIds("prompt", items, ctx, Error);
            else if (items.Count == 1 && items[0].ValueKind == JsonValueKind.String) promptText = Text("prompt", items[0]);
            else if (items.Count == 1 && items[0].ValueKind == JsonValueKind.Array)
                promptIds = TokenIds("prompt", [.. items[0].EnumerateArray()], ctx, Error);
            else if (items.All(i => i.ValueKind is JsonValueKind.String or JsonValueKind.Array))
                Error("prompt", "batched prompts are not supported: send one prompt per request", "unsupported_parameter");
            else Error("prompt", "must be a string or an array of integer token ids", "invalid_type");
            if (promptIds is { Count: 0 }) { Error("prompt", "must not be empty"); promptIds = null; }
            if (promptText is { Length: 0 }) Error("prompt", "must not be empty");
        }
        else
        {
            Error("prompt", $"must be a string or an array of token ids, not {Kind(p)}", "invalid_type");
        }

        int? promptTokens = promptIds?.Count;
        if (promptText is { Length: > 0 } && ctx.CountTokens is { } count) promptTokens = count(promptText);
        bool promptTooLong = false;
        if (promptTokens is int pt && pt >= ctx.ContextLength)
        {
            promptTooLong = true;
            Error("prompt", string.Create(CultureInfo.InvariantCulture,
                $"is {pt} tokens, but the model's context is {ctx.ContextLength} tokens (leaving room for at least one new token)"),
                "context_length_exceeded");
        }

        bool echo = false;
        if (Get("echo") is JsonElement ec)
        {
            if (ec.ValueKind is JsonValueKind.True or JsonValueKind.False) echo = ec.GetBoolean();
            else Error("echo", $"must be true or false, not {Kind(ec)}", "invalid_type");
        }
        int? logprobs = null;
        if (Get("logprobs") is JsonElement lp)
        {
            if (Integer(lp) is not long v) Error("logprobs", $"must be an integer, not {Kind(lp)}", "invalid_type");
            else if (v < 0 || v > MaxLogprobs) Error("logprobs", string.Create(CultureInfo.InvariantCulture, $"must be between 0 and {MaxLogprobs}, got {v}"));
            else logprobs = (int)v;
        }
        var hiddenStates = SwarmExtensionParser.Parse(root, ctx, promptTokens, Error);

        // max_tokens: 0 only when the prompt itself is the answer (echo, hidden states), as lm-evaluation-harness scores loglikelihoods
        int maxTokens = DefaultMaxTokens;
        int minTokens = echo || hiddenStates is not null ? 0 : 1;
        if (Get("max_tokens") is JsonElement mt)
        {
            if (Integer(mt) is not long v) Error("max_tokens", $"must be an integer, not {Kind(mt)}", "invalid_type");
            else if (v < minTokens || v > ctx.ContextLength)
                Error("max_tokens", string.Create(CultureInfo.InvariantCulture, $"must be between {minTokens} and {ctx.ContextLength}, got {v}")
                    + (v == 0 ? " (0 is allowed with echo or swarm.hidden_states)" : ""));
            else maxTokens = (int)v;
        }
        if (!promptTooLong && promptTokens is int used && maxTokens <= ctx.ContextLength && used + maxTokens > ctx.ContextLength)
        {
            Error("max_tokens", string.Create(CultureInfo.InvariantCulture,
                $"the prompt ({used} tokens) plus max_tokens ({maxTokens}) exceeds the model's context of {ctx.ContextLength} tokens; " +
                $"use max_tokens ≤ {ctx.ContextLength - used}"), "context_length_exceeded");
        }

        double temperature = Number("temperature", 1, v => v is >= 0 and <= 2, "must be between 0 and 2", Get, Error);
        double topP = Number("top_p", 1, v => v is > 0 and <= 1, "must be greater than 0 and at most 1", Get, Error);

        int topK = 0;
        if (Get("top_k") is JsonElement tk)
        {
            if (Integer(tk) is not long v) Error("top_k", $"must be an integer, not {Kind(tk)}", "invalid_type");
            else if (v < 0 || v > int.MaxValue) Error("top_k", string.Create(CultureInfo.InvariantCulture, $"must be 0 (off) or a positive integer, got {v}"));
            else topK = (int)v;
        }

        long? seed = null;
        if (Get("seed") is JsonElement sd)
        {
            if (Integer(sd) is long v) seed = v;
            else Error("seed", $"must be an integer, not {Kind(sd)}", "invalid_type");
        }

        var stop = new List<string>();
        if (Get("stop") is JsonElement st)
        {
            if (st.ValueKind == JsonValueKind.String) { if (Text("stop", st) is string one) stop.Add(one); }
            else if (st.ValueKind == JsonValueKind.Array && st.EnumerateArray().All(i => i.ValueKind == JsonValueKind.String))
                stop.AddRange(st.EnumerateArray().Select(i => Text("stop", i)).OfType<string>());
            else Error("stop", "must be a string or an array of strings", "invalid_type");
            if (stop.Any(s => s.Length == 0)) Error("stop", "stop sequences must not be empty");
            if (stop.Count > ctx.MaxStopSequences)
                Error("stop", string.Create(CultureInfo.InvariantCulture, $"at most {ctx.MaxStopSequences} stop sequences are allowed, got {stop.Count}"));
        }

        List<int> stopIds = [];
        if (Get("stop_token_ids") is JsonElement sti)
        {
            if (sti.ValueKind != JsonValueKind.Array) Error("stop_token_ids", $"must be an array of token ids, not {Kind(sti)}", "invalid_type");
            else stopIds = TokenIds("stop_token_ids", [.. sti.EnumerateArray()], ctx, Error) ?? [];
        }

        bool stream = false;
        if (Get("stream") is JsonElement sm)
        {
            if (sm.ValueKind is JsonValueKind.True or JsonValueKind.False) stream = sm.GetBoolean();
            else Error("stream", $"must be true or false, not {Kind(sm)}", "invalid_type");
        }

        bool includeUsage = false;
        if (Get("stream_options") is JsonElement so)
        {
            if (so.ValueKind != JsonValueKind.Object) Error("stream_options", $"must be an object, not {Kind(so)}", "invalid_type");
            else
            {
                if (!stream) Error("stream_options", "is only allowed when stream is true");
                if (so.TryGetProperty("include_usage", out var iu) && iu.ValueKind != JsonValueKind.Null)
                {
                    if (iu.ValueKind is JsonValueKind.True or JsonValueKind.False) includeUsage = iu.GetBoolean();
                    else Error("stream_options.include_usage", $"must be true or false, not {Kind(iu)}", "invalid_type");
                }
            }
        }

        UnsupportedParameters.Check(root, Error);

        if (errors.Count > 0) return new CompletionParseResult(null, errors);
        return new CompletionParseResult(new CompletionRequest
        {
            Model = model,
            PromptText = promptText,
            PromptTokenIds = promptIds,
            PromptTokenCount = promptTokens,
            MaxTokens = maxTokens,
            Temperature = temperature,
            TopP = topP,
            TopK = topK,
            Seed = seed,
            Stop = stop,
            StopTokenIds = stopIds,
            Stream = stream,
            IncludeUsage = includeUsage,
            Logprobs = logprobs,
            Echo = echo,
            HiddenStates = hiddenStates,
        }, []);
    }

    private static double Number(string field, double fallback, Func<double, bool> ok, string rule,
        Func<string, JsonElement?> get, Action<string, string, string> error)
    {
        if (get(field) is not JsonElement e) return fallback;
        if (e.ValueKind != JsonValueKind.Number || !e.TryGetDouble(out double v))
        {
            error(field, $"must be a number, not {Kind(e)}", "invalid_type");
            return fallback;
        }
        if (!ok(v))
        {
            error(field, string.Create(CultureInfo.InvariantCulture, $"{rule}, got {v}"), "invalid_value");
            return fallback;
        }
        return v;
    }

    private static List<int>? TokenIds(string field, List<JsonElement> items, CompletionValidationContext ctx, Action<string, string, string> error)
    {
        var ids = new List<int>(items.Count);
        for (int i = 0; i < items.Count; i++)
        {
            if (Integer(items[i]) is not long v)
            {
                error(field, string.Create(CultureInfo.InvariantCulture, $"item {i} must be an integer token id, not {Kind(items[i])}"), "invalid_type");
                return null;
            }
            if (v < 0 || v >= ctx.VocabSize)
            {
                error(field, string.Create(CultureInfo.InvariantCulture, $"item {i} is token id {v}, outside the vocabulary [0, {ctx.VocabSize})"), "invalid_value");
                return null;
            }
            ids.Add((int)v);
        }
        return ids;
    }

    private static long? Integer(JsonElement e) =>
        e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out long v) ? v : null;

    /// <summary>Offset of the first byte that does not begin a valid UTF-8 sequence, or null when all are valid.</summary>
    private static int? FirstInvalidUtf8Byte(ReadOnlySpan<byte> bytes)
    {
        if (System.Text.Unicode.Utf8.IsValid(bytes)) return null;
        int offset = 0;
        while (offset < bytes.Length)
        {
            if (Rune.DecodeFromUtf8(bytes[offset..], out _, out int consumed) != System.Buffers.OperationStatus.Done) return offset;
            offset += consumed;
        }
        return null;
    }

    /// <summary>"a string", "an integer", … for messages.</summary>
    internal static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => "a string",
        JsonValueKind.Number => e.TryGetInt64(out _) ? "an integer" : "a fractional number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Array => "an array",
        JsonValueKind.Object => "an object",
        JsonValueKind.Null => "null",
        _ => "nothing",
    };
}
