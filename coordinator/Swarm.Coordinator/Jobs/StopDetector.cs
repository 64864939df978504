using System.Text;

namespace Swarm.Coordinator.Jobs;

/// <summary>
/// Decides when a job stops before its token limit, and which of its text a client may be shown yet. A token among the
/// stop token ids ends the job (its text is not part of the completion); so does a stop sequence in the decoded text,
/// which may span several tokens (the completion ends before it). Text that could be the beginning of a stop sequence
/// is held back until the next pieces show that it is not, so no part of a stop sequence is ever released. Fed the
/// text of one token at a time; everything it releases, in order, is the completion's text.
/// </summary>
internal sealed class StopDetector
{
    private readonly HashSet<int> _stopTokens;
    private readonly string[] _stopSequences;
    private readonly StringBuilder _released = new();
    private string _held = "";
    private bool _ended;

    /// <summary>Creates a detector for one job.</summary>
    public StopDetector(IEnumerable<int> stopTokenIds, IReadOnlyList<string> stopSequences)
    {
        _stopTokens = [.. stopTokenIds];
        _stopSequences = [.. stopSequences.Where(s => s.Length > 0)];
    }

    /// <summary>The text released so far.</summary>
    public string Text => _released.ToString();

    /// <summary>True when <paramref name="token"/> is one of the stop token ids.</summary>
    public bool IsStopToken(int token) => _stopTokens.Contains(token);

    /// <summary>
    /// Takes the text the next token completes (possibly empty). Returns the text that is now safe to show — all of it
    /// except a tail that could begin a stop sequence, or, when a stop sequence is complete, the text before it — and
    /// whether a stop sequence ended the job.
    /// </summary>
    /// <exception cref="InvalidOperationException">The job already ended.</exception>
    public (string Released, bool Stop) Push(string piece)
    {
        if (_ended) throw new InvalidOperationException("the job already ended");
        string pending = _held + piece;
        int cut = _stopSequences.Select(s => pending.IndexOf(s, StringComparison.Ordinal)).Where(i => i >= 0).DefaultIfEmpty(-1).Min();
        if (cut >= 0)
        {
            _ended = true;
            _held = "";
            return (Release(pending[..cut]), true);
        }
        int keep = LongestStopPrefixAtEnd(pending);
        _held = pending[^keep..];
        return (Release(pending[..^keep]), false);
    }

    /// <summary>
    /// The job ends: by its token limit, or by a stop token (whose own text is not passed). Releases the held-back text
    /// followed by <paramref name="tail"/> (what the decoder still holds: an incomplete last character as U+FFFD) —
    /// still cut before a stop sequence should one appear in them. Returns "" after a stop sequence.
    /// </summary>
    public string Finish(string tail)
    {
        if (_ended) return "";
        var (released, stop) = Push(tail);
        _ended = true;
        if (stop) return released;
        string rest = _held;
        _held = "";
        return released + Release(rest);
    }

    /// <summary>Length of the longest end of <paramref name="text"/> that some stop sequence begins with.</summary>
    private int LongestStopPrefixAtEnd(string text)
    {
        int longest = 0;
        foreach (string s in _stopSequences)
        {
            for (int k = Math.Min(s.Length - 1, text.Length); k > longest; k--)
            {
                if (text.AsSpan(text.Length - k).SequenceEqual(s.AsSpan(0, k)))
                {
                    longest = k;
                    break;
                }
            }
        }
        return longest;
    }

    private string Release(string text)
    {
        _released.Append(text);
        return text;
    }
}
