namespace Swarm.Coordinator.Verification;

/// <summary>How often the coordinator spot-checks nodes, how it compares their results, and how long a ban lasts.</summary>
internal sealed class VerificationOptions
{
    /// <summary>
    /// Fraction of sessions whose steps are also run on a second replica of one hop (<c>--verify-rate</c>). The coordinator's
    /// default is 0.05; 0 turns spot checks (and bans) off, which is this class's default.
    /// </summary>
    public double Rate { get; init; }

    /// <summary>
    /// Checked steps a node must pass before it is checked at the base rate: until then — and again after each failed
    /// check, which adds as many — a session through it is checked at <see cref="ProbationRate"/>. Default 32: a node
    /// that corrupts a fraction P of its outputs gets through probation unnoticed with probability (1 − P)³² (0.08 % at
    /// P = 0.2).
    /// </summary>
    public int ProbationChecks { get; init; } = 32;

    /// <summary>The check rate of a node on probation: ten times <see cref="Rate"/>, at most 1 (0 when <see cref="Rate"/> is 0).</summary>
    public double ProbationRate => Math.Min(1, 10 * Rate);

    /// <summary>
    /// Largest relative distance ‖a − b‖ / max(‖a‖, ‖b‖) between two replicas' fingerprints of one position that still
    /// counts as agreement. Default 0.1. Honest replicas differ by rounding only: f32 against bf16 weights and
    /// activations measure at most ≈ 0.03 on the fixture models (hidden states and logits alike; the test
    /// <c>Fingerprint_F32AgainstBf16_StaysWellInsideTolerance</c> measures it), f16 on the wire adds ≈ 0.001. A corrupted
    /// position (noise as large as the values, the <c>SWARM_FAULT</c> hook) measures ≈ 1. 0.1 leaves 3× headroom over
    /// the honest spread and is ten times below a corruption — one that changes a position by less than 10 % of its
    /// norm goes unnoticed.
    /// </summary>
    public double Tolerance { get; init; } = 0.1;

    /// <summary>
    /// Two last stages that picked different tokens still agree when their logits agree, each one's pick is the other's
    /// runner-up and both margins (top logit minus runner-up) are below this fraction of the logits' RMS: a near tie
    /// that rounding can tip either way (bf16 logits are off by ≈ 1 % of their size). Default 0.1. A liar gains
    /// little from it: its token must be the honest runner-up of a near tie.
    /// </summary>
    public double TieMargin { get; init; } = 0.1;

    /// <summary>
    /// <c>--stream-verified-only</c>: a streamed job whose route has a node on probation (see <see cref="ProbationChecks"/>)
    /// holds each token back until no ban can take it back — every probationary node of the token's route has passed a
    /// check since the token was generated — and such a session's probationary hop is always checked, so its tokens
    /// are released as their checks pass. A node banned meanwhile rewinds held tokens silently instead of ending the
    /// stream with <c>node_banned</c>; whatever is still held when the job ends is released then (a finished job has
    /// nothing left to rewind, like an unstreamed response). Default false.
    /// </summary>
    public bool StreamVerifiedOnly { get; init; }

    /// <summary>How long a banned identity is refused when it registers again (<c>--ban-time</c>). Default 1 h.</summary>
    public TimeSpan BanTime { get; init; } = TimeSpan.FromHours(1);

    /// <summary>
    /// Least time a check waits for the shadow's reply after the route's own (four times the route's step time when that
    /// is longer); then it is counted as <c>outcome="timeout"</c> and the step stands unchecked — nobody is blamed. Steps
    /// go on meanwhile; only the job's end waits for its last checks. Default 5 s.
    /// </summary>
    public TimeSpan ShadowPatience { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// True while a node with these check counts is on probation: fewer than <see cref="ProbationChecks"/> passed, once
    /// more for every failed one. Never when checks are off.
    /// </summary>
    public bool IsOnProbation(int passed, int failed) => Rate > 0 && passed < ProbationChecks * (1 + failed);

    /// <summary>The problems with these settings (empty when valid).</summary>
    public IEnumerable<string> Validate()
    {
        if (!(Rate is >= 0 and <= 1)) yield return $"--verify-rate {Rate} must be in [0, 1]";
        if (ProbationChecks < 0) yield return "probation checks must be ≥ 0";
        if (!(Tolerance > 0)) yield return "verification tolerance must be > 0";
        if (BanTime <= TimeSpan.Zero) yield return "--ban-time must be > 0";
    }
}
