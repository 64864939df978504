using Swarm.Transport.Security;
using Xunit;

namespace Swarm.Tests.Security;

public class ReplayWindowTests
{
    private static ReplayVerdict Offer(ReplayWindow w, ulong counter)
    {
        var verdict = w.Check(counter);
        if (verdict == ReplayVerdict.Fresh) w.Mark(counter);
        return verdict;
    }

    [Fact]
    public void FirstCounters_AnyOrder_AreFreshOnce()
    {
        var w = new ReplayWindow(64);
        Assert.Equal(ReplayVerdict.Fresh, Offer(w, 5));
        Assert.Equal(ReplayVerdict.Fresh, Offer(w, 0));
        Assert.Equal(ReplayVerdict.Replayed, Offer(w, 0));
        Assert.Equal(ReplayVerdict.Replayed, Offer(w, 5));
        Assert.Equal(5UL, w.Newest);
    }

    [Fact]
    public void Check_DoesNotMark()
    {
        var w = new ReplayWindow(64);
        Assert.Equal(ReplayVerdict.Fresh, w.Check(3));
        Assert.Equal(ReplayVerdict.Fresh, w.Check(3));
    }

    [Fact]
    public void Window_EdgeIsInclusiveOfSizeMinusOne()
    {
        var w = new ReplayWindow(128);
        Offer(w, 1000);
        Assert.Equal(ReplayVerdict.Fresh, Offer(w, 1000 - 127));
        Assert.Equal(ReplayVerdict.TooOld, Offer(w, 1000 - 128));
    }

    [Fact]
    public void LargeJump_ClearsStaleBitsSoReusedSlotsAreFresh()
    {
        var w = new ReplayWindow(128);
        for (ulong c = 0; c < 200; c++) Assert.Equal(ReplayVerdict.Fresh, Offer(w, c));
        Assert.Equal(ReplayVerdict.Fresh, Offer(w, 200 + 3 * 64)); // ring slots of 192..255 and older reused
        for (ulong c = 200 + 3 * 64 - 127; c < 200 + 3 * 64; c++)
            Assert.Equal(ReplayVerdict.Fresh, Offer(w, c));
        Assert.Equal(ReplayVerdict.Replayed, Offer(w, 300));
    }

    [Fact]
    public void RandomOrder_MatchesASetBasedModel()
    {
        var rng = new Random(42);
        var w = new ReplayWindow(256);
        var seen = new HashSet<ulong>();
        ulong newest = 0;
        bool any = false;
        for (int i = 0; i < 20000; i++)
        {
            ulong counter = (ulong)Math.Max(0, (long)newest + rng.Next(-300, 40));
            ReplayVerdict expected = any && counter <= newest && newest - counter >= 256 ? ReplayVerdict.TooOld
                : seen.Contains(counter) ? ReplayVerdict.Replayed : ReplayVerdict.Fresh;
            Assert.Equal(expected, Offer(w, counter));
            if (expected == ReplayVerdict.Fresh)
            {
                seen.Add(counter);
                newest = any ? Math.Max(newest, counter) : counter;
                any = true;
            }
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(100)]
    public void Constructor_SizeNotAMultipleOf64_Throws(int size) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new ReplayWindow(size));
}
