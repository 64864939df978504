namespace Swarm.Coordinator.Speculation;

/// <summary>
/// The adaptive draft length of one job, between 1 and k_max: after a pass that accepted every drafted token it grows by
/// one; after one that rejected some, it becomes the accepted count plus one (what would have sufficed, with room to grow).
/// A long run of good drafts thus reaches k_max quickly, and a poorly drafted stretch costs little extra compute per pass.
/// It changes only when a pass is answered, so a pass replayed after a failure drafts as many tokens as before.
/// </summary>
/// <param name="max">k_max (≥ 1); the length starts there.</param>
internal sealed class DraftLength(int max)
{
    /// <summary>k_max.</summary>
    public int Max { get; } = max >= 1 ? max : throw new ArgumentOutOfRangeException(nameof(max), "k_max must be ≥ 1");

    /// <summary>Tokens to draft for the next pass.</summary>
    public int Current { get; private set; } = max;

    /// <summary>Adapts to a pass that drafted <paramref name="drafted"/> tokens and accepted <paramref name="accepted"/> of them.</summary>
    public void Record(int drafted, int accepted)
    {
        if (drafted <= 0) return;   // nothing was proposed: no evidence about the drafts' quality
        Current = accepted >= drafted ? Math.Min(Max, Current + 1) : Math.Clamp(accepted + 1, 1, Max);
    }
}
