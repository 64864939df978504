namespace Swarm.Coordinator.Speculation;

/// <summary>
/// Prompt lookup: drafts the tokens that followed the most recent earlier occurrence of the sequence's longest suffix
/// (of at most <see cref="MaxN"/> tokens, falling back to shorter ones). Repetitive text — code, quotes, lists, the
/// prompt's own phrases — drafts well (a continuation that reaches the end of the sequence carries on as a repetition,
/// so a loop of period p drafts k tokens); it needs no model and is a pure function of the token ids, so a step replayed
/// after a failure carries the same draft.
/// </summary>
/// <param name="maxN">Longest suffix matched (≥ 1).</param>
internal sealed class NgramDrafter(int maxN)
{
    /// <summary>Longest suffix matched.</summary>
    public int MaxN { get; } = maxN >= 1 ? maxN : throw new ArgumentOutOfRangeException(nameof(maxN), "n must be ≥ 1");

    /// <summary>Up to <paramref name="k"/> tokens to follow <paramref name="sequence"/> (prompt then output); empty when no suffix recurs.</summary>
    public int[] Propose(IReadOnlyList<int> sequence, int k)
    {
        int len = sequence.Count;
        if (k <= 0 || len < 2) return [];
        for (int n = Math.Min(MaxN, len - 1); n >= 1; n--)
        {
            // The most recent earlier start of the suffix sequence[len-n .. len) whose continuation exists.
            for (int start = len - n - 1; start >= 0; start--)
            {
                if (!Matches(sequence, start, len - n, n)) continue;
                // The continuation; where it runs past the end, the text goes on repeating (the draft continues itself).
                int from = start + n;
                var draft = new int[k];
                for (int i = 0; i < k; i++) draft[i] = from + i < len ? sequence[from + i] : draft[from + i - len];
                return draft;
            }
        }
        return [];
    }

    private static bool Matches(IReadOnlyList<int> s, int a, int b, int n)
    {
        for (int i = 0; i < n; i++)
            if (s[a + i] != s[b + i]) return false;
        return true;
    }
}
