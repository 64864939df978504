using System.Text;
using Swarm.Tokenization;
using Xunit;

namespace Swarm.Tests.Tokenization;

public class IncrementalDecoderTests
{
    private static readonly ITextTokenizer Tokenizer =
        TokenizerLoader.TryLoad(Path.Combine(AppContext.BaseDirectory, "fixtures", "tokenizer"))!;

    // Ids 2..257 are the single bytes 0..255 in the fixture (as in Pythia's layout, offset by the two specials).
    private static int ByteToken(byte b) => 2 + b;

    private static List<string> Stream(IEnumerable<int> ids)
    {
        var d = new IncrementalDecoder(Tokenizer);
        var pieces = ids.Select(d.Push).ToList();
        pieces.Add(d.Flush());
        return pieces;
    }

    private static bool EndsInHalfCharacter(string piece) => piece.Length > 0 && char.IsHighSurrogate(piece[^1]);

    [Theory]
    [InlineData("Le café, très bon 😀 👍🏽 日本語 <|endoftext|> done")]
    [InlineData("plain ascii text\nwith lines")]
    public void Pieces_ConcatenateToDecode_AndAreWholeCharacters(string text)
    {
        var ids = Tokenizer.Encode(text);
        var pieces = Stream(ids);
        Assert.Equal(text, string.Concat(pieces));
        Assert.Equal(Tokenizer.Decode(ids), string.Concat(pieces));
        Assert.DoesNotContain(pieces, p => p.Contains('\uFFFD') || EndsInHalfCharacter(p));
    }

    [Fact]
    public void CharacterSplitAcrossTokens_IsHeldUntilComplete()
    {
        var emoji = Encoding.UTF8.GetBytes("😀"); // F0 9F 98 80, one byte per token
        var d = new IncrementalDecoder(Tokenizer);
        Assert.Equal("a", d.Push(Tokenizer.Encode("a")[0]));
        Assert.Equal("", d.Push(ByteToken(emoji[0])));
        Assert.Equal("", d.Push(ByteToken(emoji[1])));
        Assert.Equal("", d.Push(ByteToken(emoji[2])));
        Assert.Equal("😀", d.Push(ByteToken(emoji[3])));
        Assert.Equal("", d.Flush());
    }

    [Fact]
    public void InvalidBytes_BecomeReplacementCharacters_LikeDecode()
    {
        // A stray continuation byte, a truncated 3-byte sequence followed by ASCII, then an unfinished one at the end.
        int[] ids = [ByteToken(0x80), ByteToken((byte)'x'), ByteToken(0xE2), ByteToken(0x82), ByteToken((byte)'y'), ByteToken(0xF0)];
        var pieces = Stream(ids);
        Assert.Equal(Tokenizer.Decode(ids), string.Concat(pieces));
        Assert.Equal("\uFFFDx", pieces[0] + pieces[1]);
        Assert.Equal("\uFFFD", pieces[^1]); // the unfinished F0 only comes out at Flush
    }

    [Fact]
    public void UnknownIds_AreSkipped()
    {
        var pieces = Stream([.. Tokenizer.Encode("ok"), 50303, .. Tokenizer.Encode("!")]);
        Assert.Equal("ok!", string.Concat(pieces));
    }
}
