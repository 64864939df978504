using Swarm.Checkpoints;
using Xunit;

namespace Swarm.Tests.Presets;

public class ConsoleProgressTests
{
    private sealed class ManualClock : TimeProvider
    {
        private long _ticks;
        public void Advance(TimeSpan by) => _ticks += by.Ticks;
        public override long GetTimestamp() => _ticks;
        public override long TimestampFrequency => TimeSpan.TicksPerSecond;
    }

    [Fact]
    public void Interactive_RedrawsOneLine_ThrottledAndEndsWithNewline()
    {
        var clock = new ManualClock();
        var output = new StringWriter();
        var p = new ConsoleProgress("pythia-70m", output, interactive: true, clock);
        p.Report((0, 200_000_000));
        clock.Advance(TimeSpan.FromMilliseconds(10));
        p.Report((1_000_000, 200_000_000));         // within 100 ms of the last draw: skipped
        clock.Advance(TimeSpan.FromSeconds(1));
        p.Report((100_000_000, 200_000_000));
        clock.Advance(TimeSpan.FromSeconds(1));
        p.Report((200_000_000, 200_000_000));
        string text = output.ToString();
        Assert.Equal(3, text.Count(c => c == '\r'));
        Assert.DoesNotContain("1.0 / 200.0 MB", text);
        Assert.Contains("[###############...............]  50.0%  100.0 / 200.0 MB  99.0 MB/s", text);
        Assert.EndsWith("100.0%  200.0 / 200.0 MB  99.5 MB/s" + Environment.NewLine, text);
        Assert.Single(text.Split(Environment.NewLine), l => l.Length > 0);
    }

    [Fact]
    public void Redirected_PrintsSparseLines()
    {
        var clock = new ManualClock();
        var output = new StringWriter();
        var p = new ConsoleProgress("x", output, interactive: false, clock);
        for (long done = 0; done <= 1000; done += 1)
        {
            clock.Advance(TimeSpan.FromMilliseconds(1));
            p.Report((done * 1000, 1_000_000));
        }
        var lines = output.ToString().Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(11, lines.Length); // 0 %, 10 %, …, 100 %
        Assert.DoesNotContain('\r', output.ToString());
        Assert.StartsWith("x:   0.0%", lines[0]);
        Assert.StartsWith("x: 100.0%  1.0 / 1.0 MB", lines[^1]);
    }
}
