using System.Text;
using System.Text.Json.Nodes;
using Swarm.Model;
using Swarm.Tests.Presets;
using Swarm.Tokenization;
using Xunit;

namespace Swarm.Tests.Tokenization;

public class TokenizerTests
{
    private static readonly string FixtureDir = Path.Combine(AppContext.BaseDirectory, "fixtures", "tokenizer");
    private static readonly Lazy<ITextTokenizer> Fixture = new(() => TokenizerLoader.TryLoad(FixtureDir)!);
    private static readonly Lazy<TokenizerJsonBuilder.Trained> Trained = new(() => TokenizerJsonBuilder.Train());

    public static readonly TheoryData<string> Texts = new()
    {
        "The quick brown fox jumps over the lazy dog.",
        "hello world",
        " leading space and trailing space ",
        "line one\nline two\n\n\tindented\r\nwindows",
        "    def forward(self, hidden_states):\n        return residual + hidden_states",
        "Le café est très bon, et la crème brûlée aussi.",
        "emoji 😀 and 👍🏽 and 🇫🇷 flags",
        "日本語のテキスト",
        "<|endoftext|>Start after a special token<|endoftext|>",
        "a<|padding|>b <|endoftext|> c",
        "It's we're they've I'm you'll he'd",
        "numbers 12345 3.14159 and symbols #$%&*()[]{}",
        "",
        "          ten spaces then text",
        "x\u00A0non-breaking\u2003em-space",
    };

    [Fact]
    public void CommittedFixture_IsTheBuildersOutput()
    {
        string committed = File.ReadAllText(Path.Combine(FixtureDir, "tokenizer.json"));
        Assert.True(TokenizerJsonBuilder.Build() == committed,
            "fixtures/tokenizer/tokenizer.json is stale: regenerate it from TokenizerJsonBuilder.Build()");
        var root = JsonNode.Parse(committed)!;
        Assert.Equal("BPE", (string?)root["model"]!["type"]);
        Assert.True(root["model"]!["merges"]!.AsArray().Count >= 200, "the fixture should hold a few hundred merges");
    }

    [Theory]
    [MemberData(nameof(Texts))]
    public void Encode_MatchesReferenceBpe_AndRoundTrips(string text)
    {
        var ids = Fixture.Value.Encode(text);
        Assert.Equal(TokenizerJsonBuilder.ReferenceEncode(Trained.Value, text), ids);
        Assert.Equal(text, Fixture.Value.Decode(ids));
        Assert.Equal(text, Encoding.UTF8.GetString(Fixture.Value.DecodeBytes(ids)));
    }

    [Fact]
    public void Encode_UsesMergesAndAddedTokens()
    {
        var t = Trained.Value;
        var ids = Fixture.Value.Encode("The<|endoftext|>");
        Assert.Equal([t.Vocab["The"], 0], ids);
        Assert.Equal([t.Vocab["Ġswarm"], t.Vocab["Ġthe"]], Fixture.Value.Encode(" swarm the"));
        Assert.Equal([t.Vocab["Ġthe"]], Fixture.Value.Encode(" the"));
        // Runs of spaces are Pythia-style added tokens, matched longest first.
        Assert.Equal([t.Vocab["x"], t.Added["    "], t.Vocab["y"]], Fixture.Value.Encode("x    y"));
        Assert.Equal([t.Vocab["x"], t.Added["    "], t.Vocab["Ġthe"]], Fixture.Value.Encode("x     the"));
        // Characters with no merge fall back to their bytes: é is 0xC3 0xA9 → two byte tokens unless merged.
        Assert.All(Fixture.Value.Encode("\u20AC"), id => Assert.InRange(id, 2, 257)); // € never occurs in the corpus
    }

    [Fact]
    public void Decode_SkipsIdsTheTokenizerDoesNotKnow()
    {
        var ids = Fixture.Value.Encode("hello world").ToList();
        ids.Insert(1, 50300);  // model vocab is padded beyond the tokenizer's
        ids.Add(-1);
        Assert.Equal("hello world", Fixture.Value.Decode(ids));
        Assert.Equal("hello world", Encoding.UTF8.GetString(Fixture.Value.DecodeBytes(ids)));
    }

    [Fact]
    public void MergesAsPairs_LoadTheSameTokenizer()
    {
        using var dir = new TempDir();
        File.WriteAllText(Path.Combine(dir.Path, "tokenizer.json"), TokenizerJsonBuilder.Build(mergesAsPairs: true));
        var pairs = TokenizerLoader.TryLoad(dir.Path)!;
        foreach (var text in Texts) Assert.Equal(Fixture.Value.Encode(text), pairs.Encode(text));
    }

    [Fact]
    public void TryLoad_NoTokenizerJson_ReturnsNull()
    {
        using var dir = new TempDir();
        Assert.Null(TokenizerLoader.TryLoad(dir.Path));
        Assert.Null(TokenizerLoader.TryLoad(Path.Combine(AppContext.BaseDirectory, "fixtures", "neox-tiny", "checkpoint")));
    }

    [Theory]
    [InlineData("""{"model":{"type":"WordPiece","vocab":{}}}""", "model.type is 'WordPiece'")]
    [InlineData("""{"model":{"type":"BPE","vocab":{"a":0},"merges":[]}}""", "pre_tokenizer is missing")]
    [InlineData("""{"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"Metaspace"}}""", "pre_tokenizer 'Metaspace' is not supported")]
    [InlineData("""{"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":true}}""", "add_prefix_space")]
    [InlineData("""{"model":{"type":"BPE","vocab":{"a":0,"b":1},"merges":["a b"]},"pre_tokenizer":{"type":"ByteLevel"}}""", "merges[0] ('a' + 'b') uses a token missing")]
    [InlineData("""{"model":{"type":"BPE","vocab":{"a":0},"merges":["ab"]},"pre_tokenizer":{"type":"ByteLevel"}}""", "merges[0] 'ab' is not two tokens")]
    [InlineData("""{"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"ByteLevel"},"normalizer":{"type":"Lowercase"}}""", "normalizer 'Lowercase'")]
    [InlineData("""{"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"ByteLevel"},"post_processor":{"type":"TemplateProcessing"}}""", "post_processor 'TemplateProcessing'")]
    [InlineData("""{"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"ByteLevel"},"added_tokens":[{"id":1,"content":"<x>","lstrip":true}]}""", "lstrip")]
    [InlineData("""{"model":{"type":"BPE","vocab":{"a b":0},"merges":[]},"pre_tokenizer":{"type":"ByteLevel"}}""", "not written in the byte-level alphabet")]
    [InlineData("""{"model": """, "invalid JSON")]
    public void Load_InvalidOrUnsupported_ClearError(string json, string expected)
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "tokenizer.json");
        File.WriteAllText(path, json);
        var e = Assert.Throws<CheckpointException>(() => TokenizerLoader.TryLoad(dir.Path));
        Assert.Contains(expected, e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void Load_MissingFile_ClearError()
    {
        var e = Assert.Throws<CheckpointException>(() => TokenizerLoader.Load("/nonexistent/tokenizer.json"));
        Assert.Contains("/nonexistent/tokenizer.json", e.Message);
    }
}
