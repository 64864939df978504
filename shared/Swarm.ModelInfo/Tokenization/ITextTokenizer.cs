namespace Swarm.Tokenization;

/// <summary>Text ↔ token ids for one model. Implementations are immutable and thread-safe.</summary>
public interface ITextTokenizer
{
    /// <summary>Token ids of <paramref name="text"/> (no BOS/EOS added), as HF <c>tokenizer.encode(text)</c>.</summary>
    IReadOnlyList<int> Encode(string text);

    /// <summary>
    /// Text of <paramref name="ids"/>: the UTF-8 of <see cref="DecodeBytes"/>, invalid or incomplete
    /// sequences replaced by U+FFFD. Special tokens are kept (as HF <c>decode</c> does by default);
    /// ids the tokenizer does not know (e.g. the model's padding rows beyond the vocabulary) are skipped.
    /// </summary>
    string Decode(IEnumerable<int> ids);

    /// <summary>The raw bytes <paramref name="ids"/> stand for (byte-level BPE tokens are byte strings,
    /// not necessarily whole UTF-8 characters). Unknown ids are skipped. Used for streaming output.</summary>
    byte[] DecodeBytes(IEnumerable<int> ids);
}
