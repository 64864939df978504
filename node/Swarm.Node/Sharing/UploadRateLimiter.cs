namespace Swarm.Node.Sharing;

/// <summary>
/// The upload budget of a node that shares its tensors: a token bucket of bytes refilled at
/// <see cref="BytesPerSecond"/> and holding at most one second's worth. A chunk may be sent once the bucket can pay
/// for it; a reservation that would have to wait longer than the allowed wait is refused, so a busy node answers
/// "overloaded" at once (the asker tries another source) instead of keeping requests queued. I/O-free: driven by
/// an injected clock.
/// </summary>
internal sealed class UploadRateLimiter
{
    private readonly TimeProvider _time;
    private readonly Lock _gate = new();
    private double _tokens;
    private DateTimeOffset _last;

    /// <param name="bytesPerSecond">Sustained upload rate; also the burst size.</param>
    /// <param name="time">Clock (a fake one in tests).</param>
    public UploadRateLimiter(long bytesPerSecond, TimeProvider? time = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bytesPerSecond, 1);
        BytesPerSecond = bytesPerSecond;
        _time = time ?? TimeProvider.System;
        _tokens = bytesPerSecond;
        _last = _time.GetUtcNow();
    }

    /// <summary>The sustained rate, in bytes per second.</summary>
    public long BytesPerSecond { get; }

    /// <summary>
    /// Reserves <paramref name="bytes"/> of upload: returns how long to wait before sending them (zero when the bucket
    /// holds them), or null — and reserves nothing — when that wait would exceed <paramref name="maxWait"/>.
    /// </summary>
    public TimeSpan? TryReserve(int bytes, TimeSpan maxWait)
    {
        lock (_gate)
        {
            var now = _time.GetUtcNow();
            _tokens = Math.Min(BytesPerSecond, _tokens + Math.Max(0, (now - _last).TotalSeconds) * BytesPerSecond);
            _last = now;
            double after = _tokens - bytes;
            var wait = after >= 0 ? TimeSpan.Zero : TimeSpan.FromSeconds(-after / BytesPerSecond);
            if (wait > maxWait) return null;
            _tokens = after;
            return wait;
        }
    }
}
