using System.Globalization;
using Microsoft.Extensions.Logging;

namespace Swarm.Transport;

/// <summary>
/// Aggregates a warning that can repeat thousands of times a second (garbage datagrams, refused connects, slow
/// clients): the first occurrence of each kind is logged; later ones within <see cref="Interval"/> are only counted,
/// and the first occurrence after the interval is logged after a line saying how many were held back — the rule of
/// the Linux kernel's printk rate limit ("N callbacks suppressed"). Every occurrence still counts in the caller's
/// metrics; the log keeps the pattern and stays readable. Thread-safe.
/// </summary>
public sealed partial class RepeatedLogLimiter
{
    /// <summary>Interval when none is given: 10 s.</summary>
    public static readonly TimeSpan DefaultInterval = TimeSpan.FromSeconds(10);

    /// <summary>Kinds tracked separately; further kinds share one entry, so memory stays bounded whatever the input.</summary>
    public const int MaxKinds = 64;

    private const string OtherKinds = "(other)";
    private readonly Dictionary<string, KindState> _kinds = new(StringComparer.Ordinal);
    private readonly TimeProvider _time;

    /// <summary>Creates a limiter.</summary>
    /// <param name="interval">How long after a logged occurrence further ones of its kind are only counted (default <see cref="DefaultInterval"/>).</param>
    /// <param name="time">Clock (tests pass a manual one).</param>
    public RepeatedLogLimiter(TimeSpan? interval = null, TimeProvider? time = null)
    {
        Interval = interval ?? DefaultInterval;
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(Interval, TimeSpan.Zero);
        _time = time ?? TimeProvider.System;
    }

    /// <summary>See the constructor.</summary>
    public TimeSpan Interval { get; }

    private sealed class KindState
    {
        public long LoggedAt;
        public long HeldBack;
    }

    /// <summary>
    /// Records one occurrence of <paramref name="kind"/>. True when the caller should log it now; then
    /// <paramref name="heldBack"/> is how many occurrences were counted without a log line since the last logged one.
    /// </summary>
    public bool TryAcquire(string kind, out long heldBack, out TimeSpan since)
    {
        ArgumentNullException.ThrowIfNull(kind);
        long now = _time.GetTimestamp();
        lock (_kinds)
        {
            if (!_kinds.TryGetValue(kind, out var state))
            {
                if (_kinds.Count >= MaxKinds) kind = OtherKinds;
                if (!_kinds.TryGetValue(kind, out state))
                {
                    _kinds[kind] = new KindState { LoggedAt = now };
                    heldBack = 0;
                    since = TimeSpan.Zero;
                    return true;
                }
            }
            since = _time.GetElapsedTime(state.LoggedAt, now);
            if (since < Interval)
            {
                state.HeldBack++;
                heldBack = 0;
                return false;
            }
            heldBack = state.HeldBack;
            state.HeldBack = 0;
            state.LoggedAt = now;
            return true;
        }
    }

    /// <summary>
    /// Records one occurrence of <paramref name="kind"/>; true when the caller should log it now. When occurrences were
    /// held back since the last logged one, logs first how many, on <paramref name="logger"/> at <paramref name="level"/>.
    /// </summary>
    public bool ShouldLog(ILogger logger, string kind, LogLevel level = LogLevel.Warning)
    {
        ArgumentNullException.ThrowIfNull(logger);
        if (!TryAcquire(kind, out long heldBack, out var since)) return false;
        if (heldBack > 0) LogHeldBack(logger, level, heldBack, kind, Math.Round(since.TotalSeconds, 1).ToString(CultureInfo.InvariantCulture));
        return true;
    }

    [LoggerMessage(EventId = 3010, Message = "{Count} more '{Kind}' events in the last {Seconds} s were counted but not logged")]
    private static partial void LogHeldBack(ILogger logger, LogLevel level, long count, string kind, string seconds);
}
