using Swarm.Protocol;

namespace Swarm.Coordinator.Speculation;

/// <summary>Where a job's drafted tokens come from. Configuration names: <c>none</c>, <c>ngram</c>, <c>draft</c>.</summary>
public enum SpeculationMode
{
    /// <summary>No speculation: one token per pass through the pipeline.</summary>
    None = 0,
    /// <summary>Prompt lookup in the coordinator (<see cref="NgramDrafter"/>): no model, no extra work on the nodes.</summary>
    Ngram = 1,
    /// <summary>
    /// A draft model run by the last-stage node (<c>--draft-model</c>): each step's answer brings the next step's draft,
    /// so drafting costs no round trip. Where a route's last node does not hold the draft model, prompt lookup drafts instead.
    /// </summary>
    DraftModel = 2,
}

/// <summary>Speculative decoding settings of the coordinator's jobs.</summary>
public sealed record SpeculationOptions
{
    /// <summary>Where drafts come from (default <see cref="SpeculationMode.None"/>).</summary>
    public SpeculationMode Mode { get; init; } = SpeculationMode.None;

    /// <summary>Most tokens drafted per pass, k_max (default 4); the draft length adapts between 1 and it (<see cref="DraftLength"/>).</summary>
    public int MaxDraft { get; init; } = 4;

    /// <summary>
    /// With <see cref="SpeculationMode.DraftModel"/>: the draft's identity (<see cref="Swarm.Model.DraftModelIdentity"/>) a
    /// last-stage node must announce (<see cref="Hello.DraftModel"/>) for the coordinator to ask it for drafts. Default empty.
    /// </summary>
    public string DraftModel { get; init; } = "";

    /// <summary>Longest suffix prompt lookup matches (default 3); it falls back to shorter ones down to 1.</summary>
    public int NgramMax { get; init; } = 3;

    /// <summary>True when jobs speculate.</summary>
    public bool Enabled => Mode != SpeculationMode.None;

    /// <summary>Parses a mode name (<c>none</c>, <c>ngram</c>, <c>draft</c>, case-insensitive); null when unknown.</summary>
    public static SpeculationMode? ParseMode(string? name) => name?.Trim().ToLowerInvariant() switch
    {
        null or "" or "none" or "off" => SpeculationMode.None,
        "ngram" => SpeculationMode.Ngram,
        "draft" or "draft-model" => SpeculationMode.DraftModel,
        _ => null,
    };

    /// <summary>Every problem with the settings (empty when valid).</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (!Enum.IsDefined(Mode)) errors.Add($"speculation mode {Mode} is unknown");
        if (MaxDraft < 1 || MaxDraft > ProtocolInfo.MaxDraftTokens) errors.Add($"speculative draft length {MaxDraft} must be in [1, {ProtocolInfo.MaxDraftTokens}]");
        if (NgramMax < 1) errors.Add($"prompt-lookup n-gram length {NgramMax} must be ≥ 1");
        if ((Mode == SpeculationMode.DraftModel) != (DraftModel.Length > 0)) errors.Add("draft-model speculation needs a draft model (--draft-model DIR), and a draft model needs it");
        return errors;
    }
}
