using System.Text;

namespace Swarm.Coordinator.Jobs;

/// <summary>
/// Decides when a job stops before its token limit: a token among the stop token ids was sampled, or the text decoded
/// so far contains one of the stop sequences (which may span several tokens). Fed one token and its text at a time.
/// </summary>
internal sealed class StopDetector
{
    private readonly HashSet<int> _stopTokens;
    private readonly IReadOnlyList<string> _stopSequences;
    private readonly int _longestSequence;
    private readonly StringBuilder _text = new();

    /// <summary>Creates a detector for one job.</summary>
    public StopDetector(IEnumerable<int> stopTokenIds, IReadOnlyList<string> stopSequences)
    {
        _stopTokens = [.. stopTokenIds];
        _stopSequences = [.. stopSequences.Where(s => s.Length > 0)];
        _longestSequence = _stopSequences.Count == 0 ? 0 : _stopSequences.Max(s => s.Length);
    }

    /// <summary>The text seen so far.</summary>
    public string Text => _text.ToString();

    /// <summary>
    /// Takes the next token and the text it completes (possibly empty); true when generation must stop. Only the
    /// new text and the <c>longest stop sequence − 1</c> characters before it are searched.
    /// </summary>
    public bool Push(int token, string piece)
    {
        if (_stopTokens.Contains(token)) return true;
        if (_longestSequence == 0 || piece.Length == 0) return false;
        _text.Append(piece);
        int from = Math.Max(0, _text.Length - piece.Length - (_longestSequence - 1));
        string tail = _text.ToString(from, _text.Length - from);
        return _stopSequences.Any(s => tail.Contains(s, StringComparison.Ordinal));
    }

    /// <summary><paramref name="text"/> cut before the first stop sequence it contains (unchanged when none).</summary>
    public string TrimAtStopSequence(string text)
    {
        int cut = _stopSequences.Select(s => text.IndexOf(s, StringComparison.Ordinal)).Where(i => i >= 0).DefaultIfEmpty(-1).Min();
        return cut >= 0 ? text[..cut] : text;
    }
}
