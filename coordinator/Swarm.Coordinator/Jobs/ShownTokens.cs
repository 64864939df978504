using System.Text;
using Swarm.Protocol;

namespace Swarm.Coordinator.Jobs;

/// <summary>
/// One token of a completion (or of an echoed prompt) as the client is shown it: its id, the text it adds to the
/// completion's text (possibly empty: the first bytes of a character the next token completes; cut short when a stop
/// sequence begins inside it), and its log-probabilities (null for the prompt's first token, which has no context).
/// </summary>
internal sealed record ShownToken(int TokenId, string Text, TokenLogprobs? Logprobs);

/// <summary>
/// Keeps a job's log-probabilities in step with the text it shows (the stop contract): a token is shown once all of its
/// text has been released by the <see cref="StopDetector"/>, and its <see cref="ShownToken.Text"/> is exactly that
/// text, so the shown tokens' texts concatenated are the completion's text — in every stream chunk and in the whole.
/// Text held back because it could begin a stop sequence holds its tokens back too; when the stop sequence is
/// confirmed, the token it begins in is shown with the text before it and the tokens after are dropped, like the stop
/// sequence's text (their ids stay in <c>token_ids</c>). A stop token (<c>stop_token_ids</c>) is never shown.
/// One per job; not thread-safe.
/// </summary>
internal sealed class ShownTokens
{
    private sealed class Pending(int id, string text, TokenLogprobs logprobs)
    {
        public int Id { get; } = id;
        public string Text { get; set; } = text;
        public TokenLogprobs Logprobs { get; } = logprobs;
    }

    private readonly List<Pending> _pending = [];
    private readonly StringBuilder _released = new();   // released text not yet given to a shown token
    private readonly List<ShownToken> _shown = [];

    /// <summary>Every token shown so far, in order.</summary>
    public IReadOnlyList<ShownToken> All => _shown;

    /// <summary>A generated token and the text its decoding adds (before any stop check).</summary>
    public void Add(int tokenId, string text, TokenLogprobs logprobs) => _pending.Add(new Pending(tokenId, text, logprobs));

    /// <summary>What the decoder still held at the end (an incomplete character as U+FFFD) belongs to the newest token.</summary>
    public void AppendTail(string tail)
    {
        if (tail.Length > 0 && _pending.Count > 0) _pending[^1].Text += tail;
    }

    /// <summary>
    /// Takes the text the stop detector just released and returns the tokens that it completes. While
    /// <paramref name="newestOpen"/> (the decoder holds bytes of the newest token's unfinished character) the newest
    /// token waits, since its text may still grow at the end. With <paramref name="ended"/> the job is over: a token
    /// whose text was cut by a stop sequence is shown with the part before it, the rest are dropped.
    /// </summary>
    public IReadOnlyList<ShownToken> Release(string released, bool ended, bool newestOpen)
    {
        _released.Append(released);
        var now = new List<ShownToken>();
        int take = 0, used = 0;
        while (take < _pending.Count && used + _pending[take].Text.Length <= _released.Length
               && (ended || !newestOpen || take < _pending.Count - 1))
        {
            used += _pending[take].Text.Length;
            take++;
        }
        foreach (var p in _pending.Take(take)) now.Add(new ShownToken(p.Id, p.Text, p.Logprobs));
        _pending.RemoveRange(0, take);
        _released.Remove(0, used);
        if (ended)
        {
            if (_released.Length > 0 && _pending.Count > 0)
                now.Add(new ShownToken(_pending[0].Id, _released.ToString(), _pending[0].Logprobs));
            _pending.Clear();
            _released.Clear();
        }
        _shown.AddRange(now);
        return now;
    }
}
