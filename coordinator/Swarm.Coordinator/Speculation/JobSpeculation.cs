using Swarm.Protocol;

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
/// One job's speculation: proposes each step's draft (as many tokens as <see cref="DraftLength"/> allows and the job can
/// still use), checks the last stage's answer, adapts the length and counts. Drafts come from prompt lookup over the
/// prompt and the tokens so far, or with <see cref="SpeculationMode.DraftModel"/> from the route's last node: a step whose
/// last node holds the draft model asks it for <see cref="DraftCount"/> tokens, and its answer's drafts
/// (<see cref="TokenResult.Drafted"/>) are the next step's — kept across a route repair, so the replayed step carries the
/// same draft. A step whose last node lacks the draft model uses prompt lookup; one whose last node holds it but has no
/// model drafts to verify yet (the first after a new route or a fallback) carries none, so a node that runs the draft model
/// only ever verifies that model's drafts (whose distributions it can compute). Used by the job's step loop thread only.
/// </summary>
internal sealed class JobSpeculation
{
    private readonly NgramDrafter _drafter;
    private readonly DraftLength _length;
    private readonly bool _model;
    private int[] _modelDraft = [];
    private int _modelDraftAfter = -1;   // the sequence length the model's draft follows
    private int _passes, _accepted, _drafted;

    /// <param name="options">Enabled settings.</param>
    public JobSpeculation(SpeculationOptions options)
    {
        if (!options.Enabled) throw new ArgumentException("speculation is off", nameof(options));
        _drafter = new NgramDrafter(options.NgramMax);
        _length = new DraftLength(options.MaxDraft);
        _model = options.Mode == SpeculationMode.DraftModel;
    }

    /// <summary>The figures so far.</summary>
    public SpeculationCounts Counts => new(_passes, _accepted, _drafted);

    /// <summary>The draft length the next pass uses.</summary>
    public int Length => _length.Current;

    /// <summary>
    /// The draft of the next step: up to the current length, never more than <paramref name="room"/> (the tokens the job may
    /// still generate after the step's own one). <paramref name="modelDrafts"/>: the route's last node holds the draft model.
    /// </summary>
    public int[] Draft(IReadOnlyList<int> sequence, int room, bool modelDrafts = false)
    {
        int k = Math.Min(_length.Current, room);
        if (!_model || !modelDrafts) return _drafter.Propose(sequence, k);
        return _modelDraftAfter == sequence.Count ? _modelDraft[..Math.Min(Math.Max(k, 0), _modelDraft.Length)] : [];
    }

    /// <summary>
    /// Tokens the route's last node drafts for the next step (<see cref="ForwardRequest.DraftCount"/>): the most the next
    /// step may use — one more than the current length, as a fully accepted pass grows it — when it holds the draft model; else 0.
    /// </summary>
    public int DraftCount(int room, bool modelDrafts) => _model && modelDrafts ? Math.Clamp(Math.Min(_length.Max, _length.Current + 1), 0, Math.Max(0, room)) : 0;

    /// <summary>Keeps the draft model's proposal <paramref name="drafted"/>, which follows the first <paramref name="after"/> tokens (prompt and output).</summary>
    public void Drafted(int[] drafted, int after)
    {
        if (!_model) return;
        _modelDraft = drafted;
        _modelDraftAfter = drafted.Length > 0 ? after : -1;
    }

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
