using System.Globalization;
using System.Text.Json.Serialization;
using Swarm.Coordinator.Jobs;
using Swarm.Tokenization;

namespace Swarm.Coordinator.Api;

/// <summary>
/// OpenAI's completions <c>logprobs</c> object: per token its text, its log-probability (null for an echoed prompt's
/// first token), the most likely tokens with theirs, and where its text begins in the choice's text.
/// </summary>
internal sealed record CompletionLogprobs
{
    /// <summary>Each token's text as the choice shows it; concatenated they are the choice's <c>text</c>.</summary>
    [JsonPropertyName("tokens")] public required IReadOnlyList<string> Tokens { get; init; }

    /// <summary>Each token's log-probability under the model's raw logits; null for the first token of an echoed prompt.</summary>
    [JsonPropertyName("token_logprobs")] public required IReadOnlyList<float?> TokenLogprobs { get; init; }

    /// <summary>Per token the <c>logprobs</c> most likely tokens and the token itself, by their text, most likely first; null where <see cref="TokenLogprobs"/> is.</summary>
    [JsonPropertyName("top_logprobs")] public required IReadOnlyList<Dictionary<string, float>?> TopLogprobs { get; init; }

    /// <summary>Where each token's text begins in the choice's text, in Unicode code points (as Python counts them).</summary>
    [JsonPropertyName("text_offset")] public required IReadOnlyList<int> TextOffset { get; init; }

    /// <summary>
    /// Builds the object for <paramref name="tokens"/> whose text begins at code point <paramref name="offset"/> of the
    /// choice's text; <paramref name="next"/> is the offset after them. Alternatives are named by their decoded text; a
    /// model without a tokenizer names every token <c>token_id:N</c> (vLLM's <c>return_tokens_as_token_ids</c> form).
    /// </summary>
    public static CompletionLogprobs Build(IReadOnlyList<ShownToken> tokens, ITextTokenizer? tokenizer, int offset, out int next)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        var texts = new List<string>(tokens.Count);
        var values = new List<float?>(tokens.Count);
        var tops = new List<Dictionary<string, float>?>(tokens.Count);
        var offsets = new List<int>(tokens.Count);
        foreach (var t in tokens)
        {
            texts.Add(tokenizer is null ? Name(t.TokenId, null) : t.Text);
            offsets.Add(offset);
            offset += CodePoints(t.Text);
            if (t.Logprobs is not { } lp)
            {
                values.Add(null);
                tops.Add(null);
                continue;
            }
            values.Add(Finite(lp.Logprob));
            var top = new Dictionary<string, float>();
            for (int i = 0; i < lp.TopIds.Length; i++) top.TryAdd(Name(lp.TopIds[i], tokenizer), Finite(lp.TopLogprobs[i]));
            top.TryAdd(Name(t.TokenId, tokenizer), Finite(lp.Logprob)); // the chosen token is always listed, as OpenAI does
            tops.Add(top);
        }
        next = offset;
        return new CompletionLogprobs { Tokens = texts, TokenLogprobs = values, TopLogprobs = tops, TextOffset = offsets };
    }

    private static string Name(int id, ITextTokenizer? tokenizer) =>
        tokenizer is null ? string.Create(CultureInfo.InvariantCulture, $"token_id:{id}") : tokenizer.Decode([id]);

    /// <summary>JSON has no infinity: a token the model rules out entirely gets the lowest float instead.</summary>
    private static float Finite(float v) => float.IsNegativeInfinity(v) ? float.MinValue : v;

    private static int CodePoints(string s)
    {
        int n = 0;
        foreach (var _ in s.EnumerateRunes()) n++;
        return n;
    }
}
