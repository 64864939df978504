using System.Text;
using Microsoft.ML.Tokenizers;

namespace Swarm.Tokenization;

/// <summary>
/// A HF byte-level BPE tokenizer (GPT-2 / GPT-NeoX / Pythia) running on Microsoft.ML.Tokenizers'
/// <see cref="BpeTokenizer"/>: encode and decode are the library's. The only glue is the id → bytes table
/// behind <see cref="DecodeBytes"/>, because the library decodes straight to a string and so cannot tell
/// an incomplete UTF-8 character (wait for the next token) from an invalid one.
/// </summary>
internal sealed class HfByteLevelBpeTokenizer : ITextTokenizer
{
    private readonly BpeTokenizer _bpe;
    private readonly byte[]?[] _bytesOf; // by id; null = id unknown to the tokenizer

    public HfByteLevelBpeTokenizer(BpeTokenizer bpe, byte[]?[] bytesOf)
    {
        _bpe = bpe;
        _bytesOf = bytesOf;
    }

    public IReadOnlyList<int> Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return _bpe.EncodeToIds(text);
    }

    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        // The library gives up on the whole sequence at an unknown id; HF skips such ids.
        return _bpe.Decode(ids.Where(IsKnown)) ?? "";
    }

    public byte[] DecodeBytes(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var result = new List<byte>();
        foreach (int id in ids)
        {
            if (IsKnown(id)) result.AddRange(_bytesOf[id]!);
        }
        return [.. result];
    }

    private bool IsKnown(int id) => (uint)id < (uint)_bytesOf.Length && _bytesOf[id] is not null;
}

/// <summary>Unicode normalisation as HF's NFC/NFKC/NFD/NFKD normalizers do it.</summary>
/// <remarks>When the process runs with invariant globalization (no ICU) .NET cannot normalise
/// non-ASCII text and the text passes unchanged; ASCII is always normalised already.</remarks>
internal sealed class UnicodeNormalizer(NormalizationForm form) : Normalizer
{
    public override string Normalize(string original)
    {
        if (Ascii.IsValid(original)) return original;
        try { return original.Normalize(form); }
        catch (PlatformNotSupportedException) { return original; }
    }

    public override string Normalize(ReadOnlySpan<char> original) => Normalize(original.ToString());
}
