using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Verification;

namespace Swarm.Coordinator.Jobs;

/// <summary>
/// A streamed job's deltas under <c>--stream-verified-only</c> (<see cref="VerificationOptions.StreamVerifiedOnly"/>):
/// a token whose route had nodes on probation when it was generated is held back until each of them has passed a spot
/// check since — from then on a ban of that node no longer reaches back to the token (a ban rewinds only what the node
/// did after its last passed check) — and tokens go out in order, so one held token holds back those after it. A
/// node banned before its held tokens went out rewinds them (<see cref="DropFrom"/>) without the stream noticing;
/// when the job ends, everything still held goes out (<see cref="ReleaseAsync"/> with <c>all</c>). Tokens through
/// nodes past probation are not held. One per job, used on the job's loop only.
/// </summary>
internal sealed class VerifiedStream(Func<JobDelta, ValueTask> send, NodeRegistry registry, SpotChecker checker)
{
    /// <summary>A token's delta, when its step was answered, and the probationary nodes of its route it waits for.</summary>
    private readonly record struct HeldDelta(JobDelta Delta, DateTimeOffset At, int[] Waits);

    private readonly List<HeldDelta> _held = [];

    /// <summary>Tokens sent to the client so far (the job's first <see cref="Sent"/> tokens).</summary>
    public int Sent { get; private set; }

    /// <summary>Tokens generated but not sent yet.</summary>
    public int Held => _held.Count;

    /// <summary>
    /// A new token's <paramref name="delta"/>, whose step was answered at <paramref name="at"/> by a route through
    /// <paramref name="nodes"/>: sent at once (with those before it) unless something it waits for has not settled.
    /// </summary>
    public ValueTask AddAsync(JobDelta delta, DateTimeOffset at, IReadOnlyList<int> nodes)
    {
        int[] waits = [.. nodes.Where(id => registry.Get(id) is { } n && checker.IsOnProbation(n))];
        _held.Add(new HeldDelta(delta, at, waits));
        return ReleaseAsync(all: false);
    }

    /// <summary>Sends, in order, the held tokens no ban can take back any more — or, with <paramref name="all"/> (the job ended), every one.</summary>
    public async ValueTask ReleaseAsync(bool all)
    {
        int ready = 0;
        while (ready < _held.Count && (all || Settled(_held[ready]))) ready++;
        if (ready == 0) return;
        var going = _held.GetRange(0, ready);
        _held.RemoveRange(0, ready);
        foreach (var h in going)
        {
            Sent += h.Delta.TokenIds.Count;
            await send(h.Delta).ConfigureAwait(false);
        }
    }

    /// <summary>Forgets the held tokens from the job's token <paramref name="from"/> on (a ban rewound them); none of them was sent.</summary>
    public void DropFrom(int from)
    {
        int keep = Math.Max(0, from - Sent);
        if (keep < _held.Count) _held.RemoveRange(keep, _held.Count - keep);
    }

    /// <summary>
    /// True when each probationary node the token waits for passed a check after its step, or at the same instant, as
    /// <see cref="JobStepLoop"/>'s rewind counts it (a node gone from the
    /// registry can no longer be banned); a banned one never settles — its ban rewinds the token.
    /// </summary>
    private bool Settled(HeldDelta h) =>
        h.Waits.All(id => registry.Get(id) is not { } n || (!n.Banned && n.LastPassedCheck >= h.At));
}
