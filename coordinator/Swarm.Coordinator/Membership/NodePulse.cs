namespace Swarm.Coordinator.Membership;

/// <summary>
/// The liveness figures of one node incarnation that change on every heartbeat: when it was last heard from and its
/// smoothed round-trip time. Shared by every <see cref="NodeSnapshot"/> of the incarnation and written in place, so a
/// heartbeat that changes nothing else swaps no snapshot (swapping one cost an O(log N) copy of the membership table per
/// heartbeat, N heartbeats twice a second). Writes happen under the registry's lock; reads are lock-free.
/// </summary>
internal sealed class NodePulse
{
    private long _lastHeartbeatUtcTicks;
    private double _rttMs = double.NaN;

    /// <summary>When the last heartbeat (or the registration) arrived.</summary>
    public DateTimeOffset LastHeartbeat
    {
        get => new(Volatile.Read(ref _lastHeartbeatUtcTicks), TimeSpan.Zero);
        set => Volatile.Write(ref _lastHeartbeatUtcTicks, value.UtcTicks);
    }

    /// <summary>Smoothed coordinator↔node round-trip time in milliseconds; null when not measured yet.</summary>
    public double? RttMs
    {
        get => Volatile.Read(ref _rttMs) is var v && double.IsNaN(v) ? null : v;
        set => Volatile.Write(ref _rttMs, value ?? double.NaN);
    }
}
