using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using Swarm.Model;

namespace Swarm.Tokenization;

/// <summary>
/// Loads a checkpoint's HF <c>tokenizer.json</c>. Supported: what Pythia / GPT-NeoX (and GPT-2-style
/// models) ship — model BPE with merges as <c>"a b"</c> strings or <c>["a", "b"]</c> pairs, ByteLevel
/// pre-tokenizer (GPT-2 regex, no prefix space) and decoder, optional NFC/NFKC/NFD/NFKD normalizer,
/// added tokens (special or not). Anything else is refused with a message naming the field, rather
/// than tokenizing differently from HF.
/// </summary>
public static class TokenizerLoader
{
    public const string FileName = "tokenizer.json";

    // tokenizers' ByteLevel pre-tokenizer split (use_regex = true), same as GPT-2's encoder.py.
    private const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>The tokenizer of <paramref name="checkpointDir"/>, or null when it has no <c>tokenizer.json</c>
    /// (then the model is driven with token ids only).</summary>
    /// <exception cref="CheckpointException">The file exists but is invalid or unsupported.</exception>
    public static ITextTokenizer? TryLoad(string checkpointDir)
    {
        string path = Path.Combine(checkpointDir, FileName);
        return File.Exists(path) ? Load(path) : null;
    }

    /// <summary>Loads a <c>tokenizer.json</c> file.</summary>
    /// <exception cref="CheckpointException">Missing, invalid or unsupported file; the message says what and where.</exception>
    public static ITextTokenizer Load(string tokenizerJsonPath)
    {
        if (!File.Exists(tokenizerJsonPath)) throw new CheckpointException($"tokenizer file not found: {tokenizerJsonPath}");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllBytes(tokenizerJsonPath)); }
        catch (JsonException e) { throw new CheckpointException($"{tokenizerJsonPath}: invalid JSON ({e.Message})"); }
        using (doc)
        {
            try { return Build(doc.RootElement, tokenizerJsonPath); }
            catch (InvalidOperationException e) { throw new CheckpointException($"{tokenizerJsonPath}: {e.Message}"); }
            catch (ArgumentException e) { throw new CheckpointException($"{tokenizerJsonPath}: {e.Message}"); }
        }
    }

    private static ITextTokenizer Build(JsonElement root, string path)
    {
        CheckpointException Bad(string what) => new($"{path}: {what}");
        if (root.ValueKind != JsonValueKind.Object) throw Bad("not a JSON object");

        // model
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object) throw Bad("no 'model' object");
        string? type = Str(model, "type");
        if (type is not null && type != "BPE") throw Bad($"model.type is '{type}'; only byte-level BPE tokenizers are supported");
        if (model.TryGetProperty("dropout", out var dropout) && dropout.ValueKind == JsonValueKind.Number && dropout.GetDouble() > 0)
            throw Bad("model.dropout is set; BPE dropout is not supported");
        if (True(model, "byte_fallback")) throw Bad("model.byte_fallback = true is not supported");
        if (True(model, "ignore_merges")) throw Bad("model.ignore_merges = true is not supported");
        if (!model.TryGetProperty("vocab", out var vocabJson) || vocabJson.ValueKind != JsonValueKind.Object) throw Bad("model.vocab is missing or not an object");
        if (!model.TryGetProperty("merges", out var mergesJson) || mergesJson.ValueKind != JsonValueKind.Array) throw Bad("model.merges is missing or not an array");

        var vocab = new Dictionary<string, int>();
        foreach (var p in vocabJson.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id) || id < 0)
                throw Bad($"model.vocab entry '{p.Name}' has no valid id");
            vocab[p.Name] = id;
        }
        if (vocab.Count == 0) throw Bad("model.vocab is empty");

        var merges = new List<string>(mergesJson.GetArrayLength());
        int index = 0;
        foreach (var m in mergesJson.EnumerateArray())
        {
            string? a, b;
            if (m.ValueKind == JsonValueKind.String)
            {
                string s = m.GetString()!;
                int space = s.IndexOf(' ');
                if (space <= 0 || space == s.Length - 1 || s.IndexOf(' ', space + 1) >= 0)
                    throw Bad($"model.merges[{index}] '{s}' is not two tokens separated by one space");
                (a, b) = (s[..space], s[(space + 1)..]);
            }
            else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2)
            {
                (a, b) = (m[0].GetString(), m[1].GetString());
                if (string.IsNullOrEmpty(a) || string.IsNullOrEmpty(b)) throw Bad($"model.merges[{index}] has an empty token");
                // Byte-level vocabularies spell space as 'Ġ', so no token contains ' ' — the library needs that.
                if (a.Contains(' ') || b.Contains(' ')) throw Bad($"model.merges[{index}] has a token containing a space, which byte-level BPE never produces");
            }
            else throw Bad($"model.merges[{index}] is neither \"a b\" nor [\"a\", \"b\"]");
            if (!vocab.ContainsKey(a) || !vocab.ContainsKey(b) || !vocab.ContainsKey(a + b))
                throw Bad($"model.merges[{index}] ('{a}' + '{b}') uses a token missing from model.vocab");
            merges.Add(a + " " + b);
            index++;
        }

        // added tokens: matched in the text before BPE, like HF's AddedVocabulary (longest first).
        var added = new List<(string Content, int Id)>();
        if (root.TryGetProperty("added_tokens", out var addedJson) && addedJson.ValueKind == JsonValueKind.Array)
        {
            foreach (var t in addedJson.EnumerateArray())
            {
                string content = Str(t, "content") ?? throw Bad("an added_tokens entry has no 'content'");
                if (!t.TryGetProperty("id", out var idJson) || !idJson.TryGetInt32(out int id) || id < 0)
                    throw Bad($"added token '{content}' has no valid id");
                foreach (string flag in new[] { "lstrip", "rstrip", "single_word" })
                {
                    if (True(t, flag)) throw Bad($"added token '{content}' sets {flag} = true, which is not supported");
                }
                added.Add((content, id));
            }
        }
        var specials = new Dictionary<string, int>();
        foreach (var (content, id) in added.OrderByDescending(a => a.Content.Length).ThenBy(a => a.Content, StringComparer.Ordinal))
            specials[content] = id;

        Normalizer? normalizer = ReadNormalizer(root, Bad);
        CheckByteLevel(root, "pre_tokenizer", required: true, Bad);
        CheckByteLevel(root, "decoder", required: false, Bad);
        if (root.TryGetProperty("post_processor", out var post) && post.ValueKind == JsonValueKind.Object && Str(post, "type") is { } postType && postType != "ByteLevel")
            throw Bad($"post_processor '{postType}' (adds tokens around the text) is not supported");

        // id → bytes, for streaming decode. Vocabulary entries are byte strings in GPT-2's character table.
        int maxId = Math.Max(vocab.Values.Max(), added.Count > 0 ? added.Max(a => a.Id) : 0);
        var bytesOf = new byte[]?[maxId + 1];
        foreach (var (content, id) in added) bytesOf[id] = Encoding.UTF8.GetBytes(content);
        foreach (var (token, id) in vocab)
        {
            if (specials.ContainsKey(token)) continue; // e.g. Pythia's runs of spaces: plain text, not byte-level spelling
            bytesOf[id] = ByteLevel.ToBytes(token) ?? throw Bad($"model.vocab token '{token}' is not written in the byte-level alphabet");
        }

        var regex = new Regex(Gpt2Pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant);
        var options = new BpeOptions(vocab)
        {
            Merges = merges,
            ByteLevel = true,
            SpecialTokens = specials.Count > 0 ? specials : null,
            PreTokenizer = new RegexPreTokenizer(regex, specials.Count > 0 ? specials : null),
            Normalizer = normalizer,
            UnknownToken = Str(model, "unk_token"),
            ContinuingSubwordPrefix = NullIfEmpty(Str(model, "continuing_subword_prefix")),
            EndOfWordSuffix = NullIfEmpty(Str(model, "end_of_word_suffix")),
            FuseUnknownTokens = True(model, "fuse_unk"),
        };
        return new HfByteLevelBpeTokenizer(BpeTokenizer.Create(options), bytesOf);
    }

    private static Normalizer? ReadNormalizer(JsonElement root, Func<string, CheckpointException> bad)
    {
        if (!root.TryGetProperty("normalizer", out var n) || n.ValueKind == JsonValueKind.Null) return null;
        string? type = Str(n, "type");
        if (type == "Sequence" && n.TryGetProperty("normalizers", out var list) && list.GetArrayLength() == 0) return null;
        return type switch
        {
            "NFC" => new UnicodeNormalizer(NormalizationForm.FormC),
            "NFKC" => new UnicodeNormalizer(NormalizationForm.FormKC),
            "NFD" => new UnicodeNormalizer(NormalizationForm.FormD),
            "NFKD" => new UnicodeNormalizer(NormalizationForm.FormKD),
            _ => throw bad($"normalizer '{type}' is not supported (only NFC, NFKC, NFD, NFKD or none)"),
        };
    }

    private static void CheckByteLevel(JsonElement root, string field, bool required, Func<string, CheckpointException> bad)
    {
        if (!root.TryGetProperty(field, out var e) || e.ValueKind == JsonValueKind.Null)
        {
            if (required) throw bad($"{field} is missing; a ByteLevel {field} is required");
            return;
        }
        string? type = Str(e, "type");
        if (type != "ByteLevel") throw bad($"{field} '{type}' is not supported (only ByteLevel)");
        if (field == "pre_tokenizer")
        {
            if (True(e, "add_prefix_space")) throw bad("pre_tokenizer.add_prefix_space = true is not supported");
            if (e.TryGetProperty("use_regex", out var r) && r.ValueKind == JsonValueKind.False)
                throw bad("pre_tokenizer.use_regex = false is not supported");
        }
    }

    private static string? Str(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static bool True(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.True;

    private static string? NullIfEmpty(string? s) => string.IsNullOrEmpty(s) ? null : s;
}
