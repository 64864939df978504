using Swarm.Transport;
using Xunit;

namespace Swarm.Tests.Transport;

public class RepeatedLogLimiterTests
{
    /// <summary>A monotonic clock that moves only when the test says so.</summary>
    private sealed class SteppedClock : TimeProvider
    {
        private long _ticks;
        public override long TimestampFrequency => TimeSpan.TicksPerSecond;
        public override long GetTimestamp() => _ticks;
        public void Advance(TimeSpan by) => _ticks += by.Ticks;
    }

    [Fact]
    public void FirstOccurrenceLogged_RestOfTheIntervalCounted_NextOneReportsTheCount()
    {
        var clock = new SteppedClock();
        var limiter = new RepeatedLogLimiter(TimeSpan.FromSeconds(10), clock);
        Assert.True(limiter.TryAcquire("bad datagram", out long held, out _));
        Assert.Equal(0, held);
        for (int i = 0; i < 4999; i++)
        {
            clock.Advance(TimeSpan.FromMilliseconds(1));
            Assert.False(limiter.TryAcquire("bad datagram", out _, out _));
        }
        clock.Advance(TimeSpan.FromSeconds(6)); // 11 s after the first
        Assert.True(limiter.TryAcquire("bad datagram", out held, out var since));
        Assert.Equal(4999, held);
        Assert.Equal(TimeSpan.FromMilliseconds(10_999), since);
        Assert.False(limiter.TryAcquire("bad datagram", out _, out _)); // a new interval began
    }

    [Fact]
    public void KindsAreIndependent_AndTheirNumberIsBounded()
    {
        var limiter = new RepeatedLogLimiter(TimeSpan.FromSeconds(10), new SteppedClock());
        Assert.True(limiter.TryAcquire("refused", out _, out _));
        Assert.True(limiter.TryAcquire("malformed", out _, out _));
        Assert.False(limiter.TryAcquire("refused", out _, out _));
        // Past MaxKinds distinct kinds, new ones share one entry: one line for all of them per interval.
        for (int i = 2; i < RepeatedLogLimiter.MaxKinds; i++) Assert.True(limiter.TryAcquire($"kind {i}", out _, out _));
        Assert.True(limiter.TryAcquire("one more kind", out _, out _));
        Assert.False(limiter.TryAcquire("yet another kind", out _, out _));
    }

    [Fact]
    public void ShouldLog_LogsTheHeldBackCountBeforeTheNextLine()
    {
        var clock = new SteppedClock();
        var limiter = new RepeatedLogLimiter(TimeSpan.FromSeconds(10), clock);
        var log = new TestLogger();
        Assert.True(limiter.ShouldLog(log, "refused connection"));
        for (int i = 0; i < 495; i++) Assert.False(limiter.ShouldLog(log, "refused connection"));
        Assert.Empty(log.Entries);
        clock.Advance(TimeSpan.FromSeconds(12));
        Assert.True(limiter.ShouldLog(log, "refused connection"));
        var (level, message) = Assert.Single(log.Entries);
        Assert.Equal(Microsoft.Extensions.Logging.LogLevel.Warning, level);
        Assert.Equal("495 more 'refused connection' events in the last 12 s were counted but not logged", message);
    }
}
