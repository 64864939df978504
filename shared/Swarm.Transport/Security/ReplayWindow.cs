namespace Swarm.Transport.Security;

/// <summary>What <see cref="ReplayWindow.Check"/> says about a counter.</summary>
internal enum ReplayVerdict
{
    /// <summary>Not seen, and new enough to be tracked.</summary>
    Fresh,
    /// <summary>Seen before: a replay (or a duplicate).</summary>
    Replayed,
    /// <summary>Older than the window: it can no longer be told apart from a replay.</summary>
    TooOld,
}

/// <summary>
/// A sliding window over received message counters (the anti-replay bitmap of RFC 6479, as in WireGuard's and
/// DTLS's receivers): counters newer than the newest seen are accepted, counters within <see cref="Size"/> behind it
/// are accepted once, older ones are refused.
/// </summary>
/// <remarks>
/// The caller checks before decrypting (cheap refusal) and marks only after the message authenticated, so forged
/// packets can neither advance the window nor burn counters. Stored as a ring of 64-bit blocks, one bit per counter,
/// with whole blocks cleared as the window moves. Not thread-safe.
/// </remarks>
internal sealed class ReplayWindow
{
    private const int BlockBits = 64;
    private readonly ulong[] _ring;
    private ulong _newest;
    private bool _any;

    /// <param name="size">How many counters behind the newest are still accepted; a positive multiple of 64.</param>
    public ReplayWindow(int size)
    {
        if (size <= 0 || size % BlockBits != 0) throw new ArgumentOutOfRangeException(nameof(size), size, "The replay window is a positive multiple of 64.");
        Size = size;
        _ring = new ulong[size / BlockBits + 1];
    }

    /// <summary>How many counters behind the newest are still accepted.</summary>
    public int Size { get; }

    /// <summary>The newest counter marked so far (0 before the first).</summary>
    public ulong Newest => _newest;

    /// <summary>Whether <paramref name="counter"/> would be accepted; changes nothing.</summary>
    public ReplayVerdict Check(ulong counter)
    {
        if (!_any || counter > _newest) return ReplayVerdict.Fresh;
        if (_newest - counter >= (ulong)Size) return ReplayVerdict.TooOld;
        var (block, bit) = Locate(counter);
        return (_ring[block] & bit) != 0 ? ReplayVerdict.Replayed : ReplayVerdict.Fresh;
    }

    /// <summary>Records <paramref name="counter"/> as received; call only after <see cref="Check"/> said Fresh and the message authenticated.</summary>
    public void Mark(ulong counter)
    {
        if (!_any)
        {
            _any = true;
            _newest = counter;
        }
        else if (counter > _newest)
        {
            ulong current = _newest / BlockBits, target = counter / BlockBits;
            ulong clear = Math.Min(target - current, (ulong)_ring.Length);
            for (ulong i = 1; i <= clear; i++)
                _ring[(current + i) % (ulong)_ring.Length] = 0;
            _newest = counter;
        }
        var (block, bit) = Locate(counter);
        _ring[block] |= bit;
    }

    private (int Block, ulong Bit) Locate(ulong counter) =>
        ((int)(counter / BlockBits % (ulong)_ring.Length), 1UL << (int)(counter % BlockBits));
}
