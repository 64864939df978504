using System.Text;

namespace Swarm.Tokenization;

/// <summary>
/// Turns a stream of generated token ids into text pieces for streaming output. A piece never ends in
/// half a UTF-8 character: bytes of a character split across tokens are held until it is complete.
/// Bytes that can never form a character come out as U+FFFD as soon as that is certain, exactly as
/// <see cref="ITextTokenizer.Decode"/> would render them. Concatenating every <see cref="Push"/> result
/// and <see cref="Flush"/> equals <c>Decode</c> of all the tokens. One instance per job; not thread-safe.
/// </summary>
public sealed class IncrementalDecoder(ITextTokenizer tokenizer)
{
    private readonly ITextTokenizer _tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
    private readonly Decoder _utf8 = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetDecoder();
    private readonly int[] _one = new int[1];

    /// <summary>Adds one token; returns the text it completes (possibly empty).</summary>
    public string Push(int token)
    {
        _one[0] = token;
        return Convert(_tokenizer.DecodeBytes(_one), flush: false);
    }

    /// <summary>True while bytes of an incomplete character are held back (the next token or <see cref="Flush"/> will show them).</summary>
    public bool HoldsBytes => _utf8.GetCharCount([], 0, 0, flush: true) > 0;

    /// <summary>Ends the stream: returns whatever is held back (an incomplete character becomes U+FFFD).</summary>
    public string Flush() => Convert([], flush: true);

    private string Convert(byte[] bytes, bool flush)
    {
        var chars = new char[_utf8.GetCharCount(bytes, flush)];
        int n = _utf8.GetChars(bytes, chars, flush);
        return new string(chars, 0, n);
    }
}
