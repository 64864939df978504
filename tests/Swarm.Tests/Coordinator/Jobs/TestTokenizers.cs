using System.Text;
using Swarm.Tokenization;

namespace Swarm.Tests.Coordinator.Jobs;

/// <summary>
/// A tokenizer whose token ids stand for the byte strings it was given (token 100 + i is the i-th), so a test chooses
/// what each sampled token decodes to — whole words, one letter, or a fragment of a UTF-8 character.
/// </summary>
internal sealed class MapTokenizer : ITextTokenizer
{
    private readonly byte[][] _bytes;

    /// <param name="bytes">Bytes of tokens 100, 101, …</param>
    public MapTokenizer(params byte[][] bytes) => _bytes = bytes;

    /// <summary>Tokens 100, 101, … decode to the UTF-8 of <paramref name="pieces"/>.</summary>
    public static MapTokenizer OfText(params string[] pieces) => new([.. pieces.Select(Encoding.UTF8.GetBytes)]);

    /// <summary>Token 100 + i is the letter 'a' + i.</summary>
    public static MapTokenizer Letters() => OfText([.. Enumerable.Range(0, 26).Select(i => ((char)('a' + i)).ToString())]);

    public IReadOnlyList<int> Encode(string text) => throw new NotSupportedException("the job pipeline never encodes");

    public string Decode(IEnumerable<int> ids) => Encoding.UTF8.GetString(DecodeBytes(ids));

    public byte[] DecodeBytes(IEnumerable<int> ids) => [.. ids.SelectMany(i => i - 100 is int k && k >= 0 && k < _bytes.Length ? _bytes[k] : [])];
}
