namespace Swarm.Transport.Security;

/// <summary>
/// Counters of the record layer, updated with <see cref="Interlocked"/> and safe to read from any thread; one
/// instance may be shared by every channel of a transport so it can expose them as metrics.
/// </summary>
public sealed class SecureChannelCounters
{
    private long _sealed, _opened, _malformed, _replayed, _tooOld, _unknownEpoch, _unauthenticated, _sendRekeys, _receiveRekeys;

    /// <summary>Records encrypted and handed to the network.</summary>
    public long Sealed => Volatile.Read(ref _sealed);

    /// <summary>Records that authenticated and were delivered.</summary>
    public long Opened => Volatile.Read(ref _opened);

    /// <summary>Records refused as malformed (too short, wrong kind, reserved counter).</summary>
    public long RejectedMalformed => Volatile.Read(ref _malformed);

    /// <summary>Records refused because their counter was already received (replays, duplicates).</summary>
    public long RejectedReplayed => Volatile.Read(ref _replayed);

    /// <summary>Records refused because their counter was behind the replay window.</summary>
    public long RejectedTooOld => Volatile.Read(ref _tooOld);

    /// <summary>Records refused because their key epoch was retired or too far ahead.</summary>
    public long RejectedUnknownEpoch => Volatile.Read(ref _unknownEpoch);

    /// <summary>Records refused because the AEAD tag did not verify (tampered, forged, or a wrong key).</summary>
    public long RejectedUnauthenticated => Volatile.Read(ref _unauthenticated);

    /// <summary>Every refused record.</summary>
    public long Rejected => RejectedMalformed + RejectedReplayed + RejectedTooOld + RejectedUnknownEpoch + RejectedUnauthenticated;

    /// <summary>Key rotations of sending directions.</summary>
    public long SendRekeys => Volatile.Read(ref _sendRekeys);

    /// <summary>Key rotations of receiving directions (one per epoch moved forward).</summary>
    public long ReceiveRekeys => Volatile.Read(ref _receiveRekeys);

    internal void CountSealed() => Interlocked.Increment(ref _sealed);
    internal void CountSendRekey() => Interlocked.Increment(ref _sendRekeys);
    internal void CountReceiveRekeys(long epochs) => Interlocked.Add(ref _receiveRekeys, epochs);

    internal void Count(OpenResult result)
    {
        switch (result)
        {
            case OpenResult.Opened: Interlocked.Increment(ref _opened); break;
            case OpenResult.Malformed: Interlocked.Increment(ref _malformed); break;
            case OpenResult.Replayed: Interlocked.Increment(ref _replayed); break;
            case OpenResult.TooOld: Interlocked.Increment(ref _tooOld); break;
            case OpenResult.UnknownEpoch: Interlocked.Increment(ref _unknownEpoch); break;
            case OpenResult.Unauthenticated: Interlocked.Increment(ref _unauthenticated); break;
        }
    }
}
