using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Swarm.Tests.Tokenization;

/// <summary>
/// Trains a small byte-level BPE on <see cref="Corpus"/> and writes it as an HF <c>tokenizer.json</c>
/// laid out exactly like Pythia's (ids 0/1 = &lt;|endoftext|&gt;/&lt;|padding|&gt;, then the 256 bytes,
/// then merges, then non-special added tokens for runs of spaces). It also encodes text with the plain
/// textbook BPE algorithm, as an independent reference for what the library must produce.
/// The fixture in fixtures/tokenizer/tokenizer.json is <c>Build()</c>'s output.
/// </summary>
internal static class TokenizerJsonBuilder
{
    public const string Corpus = """
        The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away.
        A swarm of volunteer machines runs a large language model, one pipeline stage each.
        Each node holds a slice of the transformer layers and passes hidden states to the next node.
        When a node leaves the swarm, the coordinator routes the job around it and generation goes on.
        Tokens are produced one at a time: the last stage samples the next token and sends it back.
        Le café est très bon, et la crème brûlée aussi. Voilà où nous étions déjà hier.
        def forward(self, hidden_states):
            residual = hidden_states
            hidden_states = self.input_layernorm(hidden_states)
            return residual + hidden_states

        for (int i = 0; i < 10; i++) { total += values[i] * 2; }
        Numbers: 12345 67890 3.14159 2048 50304 and the year 2024.
        """;

    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    public static readonly string[] SpaceRuns = ["    ", "   ", "  "];

    /// <summary>GPT-2's bytes_to_unicode, restated independently of the library code under test.</summary>
    public static char[] BytesToUnicode()
    {
        var printable = Enumerable.Range('!', '~' - '!' + 1).Concat(Enumerable.Range(0xA1, 12)).Concat(Enumerable.Range(0xAE, 82)).ToHashSet();
        var table = new char[256];
        int extra = 0;
        for (int b = 0; b < 256; b++) table[b] = printable.Contains(b) ? (char)b : (char)(256 + extra++);
        return table;
    }

    private static string Spell(string text, char[] table) => new(Encoding.UTF8.GetBytes(text).Select(b => table[b]).ToArray());

    public sealed record Trained(Dictionary<string, int> Vocab, List<(string A, string B)> Merges, Dictionary<string, int> Added);

    public static Trained Train(int maxMerges = 300)
    {
        var table = BytesToUnicode();
        var vocab = new Dictionary<string, int> { ["<|endoftext|>"] = 0, ["<|padding|>"] = 1 };
        for (int b = 0; b < 256; b++) vocab[table[b].ToString()] = vocab.Count;

        var words = Regex.Matches(Corpus, Gpt2Pattern).Select(m => Spell(m.Value, table))
            .GroupBy(w => w).Select(g => (Symbols: g.Key.Select(c => c.ToString()).ToList(), Count: g.Count())).ToList();
        var merges = new List<(string, string)>();
        while (merges.Count < maxMerges)
        {
            var counts = new Dictionary<(string, string), int>();
            foreach (var (symbols, count) in words)
                for (int i = 0; i + 1 < symbols.Count; i++)
                    counts[(symbols[i], symbols[i + 1])] = counts.GetValueOrDefault((symbols[i], symbols[i + 1])) + count;
            if (counts.Count == 0) break;
            var best = counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key.Item1, StringComparer.Ordinal).ThenBy(kv => kv.Key.Item2, StringComparer.Ordinal).First();
            var (a, b) = best.Key;
            merges.Add((a, b));
            vocab.TryAdd(a + b, vocab.Count);
            foreach (var (symbols, _) in words) MergeAll(symbols, a, b);
        }
        var added = new Dictionary<string, int> { ["<|endoftext|>"] = 0, ["<|padding|>"] = 1 };
        foreach (var run in SpaceRuns.Reverse())
        {
            vocab[run] = vocab.Count;
            added[run] = vocab[run];
        }
        return new Trained(vocab, merges, added);
    }

    private static void MergeAll(List<string> symbols, string a, string b)
    {
        for (int i = 0; i + 1 < symbols.Count; i++)
        {
            if (symbols[i] == a && symbols[i + 1] == b)
            {
                symbols[i] = a + b;
                symbols.RemoveAt(i + 1);
            }
        }
    }

    /// <summary>The tokenizer.json text. <paramref name="mergesAsPairs"/> selects the newer [a, b] merge format.</summary>
    public static string Build(bool mergesAsPairs = false, int maxMerges = 300)
    {
        var t = Train(maxMerges);
        JsonObject ByteLevelNode() => new() { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true };
        var addedTokens = new JsonArray();
        foreach (var (content, id) in t.Added.OrderBy(kv => kv.Value))
        {
            bool special = content.StartsWith("<|", StringComparison.Ordinal);
            addedTokens.Add(new JsonObject
            {
                ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false,
                ["rstrip"] = false, ["normalized"] = !special, ["special"] = special,
            });
        }
        var vocab = new JsonObject();
        foreach (var (token, id) in t.Vocab.OrderBy(kv => kv.Value)) vocab[token] = id;
        var merges = new JsonArray();
        foreach (var (a, b) in t.Merges) merges.Add(mergesAsPairs ? new JsonArray(a, b) : JsonValue.Create(a + " " + b));
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = addedTokens,
            ["normalizer"] = new JsonObject { ["type"] = "NFC" },
            ["pre_tokenizer"] = ByteLevelNode(),
            ["post_processor"] = ByteLevelNode(),
            ["decoder"] = ByteLevelNode(),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false,
                ["vocab"] = vocab, ["merges"] = merges,
            },
        };
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) + "\n";
    }

    /// <summary>Textbook byte-level BPE (added tokens split out leftmost-longest, GPT-2 regex, then
    /// repeatedly merge the lowest-ranked pair) — the reference the library's ids are checked against.</summary>
    public static List<int> ReferenceEncode(Trained t, string text)
    {
        var table = BytesToUnicode();
        var rank = t.Merges.Select((m, i) => (m, i)).ToDictionary(x => x.m, x => x.i);
        var ids = new List<int>();
        int start = 0;
        while (start <= text.Length)
        {
            // next added token, leftmost then longest
            int at = -1; string? match = null;
            foreach (var a in t.Added.Keys)
            {
                int i = text.IndexOf(a, start, StringComparison.Ordinal);
                if (i >= 0 && (at < 0 || i < at || (i == at && a.Length > match!.Length))) { at = i; match = a; }
            }
            string chunk = at < 0 ? text[start..] : text[start..at];
            foreach (Match m in Regex.Matches(chunk, Gpt2Pattern))
            {
                var symbols = Spell(m.Value, table).Select(c => c.ToString()).ToList();
                while (true)
                {
                    int best = -1, bestRank = int.MaxValue;
                    for (int i = 0; i + 1 < symbols.Count; i++)
                        if (rank.TryGetValue((symbols[i], symbols[i + 1]), out int r) && r < bestRank) { best = i; bestRank = r; }
                    if (best < 0) break;
                    symbols[best] += symbols[best + 1];
                    symbols.RemoveAt(best + 1);
                }
                ids.AddRange(symbols.Select(s => t.Vocab[s]));
            }
            if (at < 0) break;
            ids.Add(t.Added[match!]);
            start = at + match!.Length;
        }
        return ids;
    }
}
