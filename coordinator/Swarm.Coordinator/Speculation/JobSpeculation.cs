namespace Swarm.Coordinator.Speculation;

/// <summary>Speculation figures of one job: passes through the pipeline, drafted tokens sent, and how many of them were accepted.</summary>
/// <param name="Passes">Steps answered while the job speculated (each one target pass), with or without a draft.</param>
/// <param name="Accepted">Drafted tokens the target accepted.</param>
/// <param name="Drafted">Drafted tokens sent for verification.</param>
public sealed record SpeculationCounts(int Passes, int Accepted, int Drafted)
{
    /// <summary>Tokens generated per pass: each pass gives its accepted drafts plus one of the target's own.</summary>
    public double TokensPerPass => Passes == 0 ? 0 : (double)(Passes + Accepted) / Passes;
}

/// <summary>
/// One job's speculation: proposes each step's draft (prompt lookup over the prompt and the tokens so far, as many as
/// <see cref="DraftLength"/> allows and the job can still use), checks the last stage's answer, adapts the length and
/// counts. Used by the job's step loop thread only.
/// </summary>
internal sealed class JobSpeculation
{
    private readonly NgramDrafter _drafter;
    private readonly DraftLength _length;
    private int _passes, _accepted, _drafted;

    /// <param name="options">Enabled settings.</param>
    public JobSpeculation(SpeculationOptions options)
    {
        if (!options.Enabled) throw new ArgumentException("speculation is off", nameof(options));
        _drafter = new NgramDrafter(options.NgramMax);
        _length = new DraftLength(options.MaxDraft);
    }

    /// <summary>The figures so far.</summary>
    public SpeculationCounts Counts => new(_passes, _accepted, _drafted);

    /// <summary>The draft length the next pass uses.</summary>
    public int Length => _length.Current;

    /// <summary>
    /// The draft of the next step: up to the current length, never more than <paramref name="room"/> (the tokens the job may
    /// still generate after the step's own one).
    /// </summary>
    public int[] Draft(IReadOnlyList<int> sequence, int room) => _drafter.Propose(sequence, Math.Min(_length.Current, room));

    /// <summary>
    /// The tokens an answered step produced, checked against its draft: a prefix of the draft then one token of the target;
    /// null when the answer breaks that (a faulty last stage). Counts the pass and adapts the draft length.
    /// </summary>
    public int[]? Accept(int[] draft, int token, int[] accepted)
    {
        int[] tokens = accepted.Length == 0 ? [token] : accepted;
        if (tokens[0] != token || tokens.Length > draft.Length + 1) return null;
        for (int i = 0; i < tokens.Length - 1; i++)
            if (tokens[i] != draft[i]) return null;
        _passes++;
        _drafted += draft.Length;
        _accepted += tokens.Length - 1;
        _length.Record(draft.Length, tokens.Length - 1);
        return tokens;
    }
}
