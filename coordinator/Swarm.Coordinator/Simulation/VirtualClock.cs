namespace Swarm.Coordinator.Simulation;

/// <summary>
/// Virtual time for the simulator: it stands still until the event loop moves it to the next event
/// (<see cref="AdvanceTo"/>). The coordinator's policies read it as their <see cref="TimeProvider"/>. Timers are not
/// supported: in the simulator every periodic activity is an event, so a policy that tried to start a timer would be
/// running on its own schedule, outside the simulation.
/// </summary>
public sealed class VirtualClock : TimeProvider
{
    private readonly DateTimeOffset _origin;

    /// <summary>A clock at <paramref name="origin"/> (default 2026-01-01 00:00 UTC), elapsed zero.</summary>
    public VirtualClock(DateTimeOffset? origin = null) => _origin = origin ?? new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    /// <summary>Virtual time since the start.</summary>
    public TimeSpan Elapsed { get; private set; }

    /// <summary>Moves time forward to <paramref name="elapsed"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">It lies before the current time: events must be processed in order.</exception>
    public void AdvanceTo(TimeSpan elapsed)
    {
        if (elapsed < Elapsed) throw new ArgumentOutOfRangeException(nameof(elapsed), $"time cannot go back from {Elapsed} to {elapsed}");
        Elapsed = elapsed;
    }

    /// <inheritdoc/>
    public override DateTimeOffset GetUtcNow() => _origin + Elapsed;

    /// <inheritdoc/>
    public override long GetTimestamp() => Elapsed.Ticks;

    /// <inheritdoc/>
    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    /// <inheritdoc/>
    /// <exception cref="NotSupportedException">Always: periodic work is scheduled as simulator events.</exception>
    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) =>
        throw new NotSupportedException("the simulator has no timers: periodic work is scheduled as events");
}
