using Swarm.Coordinator.Jobs;
using Xunit;

namespace Swarm.Tests.Coordinator.Jobs;

public sealed class StopDetectorTests
{
    [Fact]
    public void IsStopToken_OnlyTheGivenIds()
    {
        var stop = new StopDetector([7], []);
        Assert.False(stop.IsStopToken(5));
        Assert.True(stop.IsStopToken(7));
    }

    [Fact]
    public void Push_StopSequenceArrivesOverSeveralPieces_NoPartOfItIsReleased()
    {
        var stop = new StopDetector([], ["\n\nQ:"]);
        Assert.Equal(("Answer: 42", false), stop.Push("Answer: 42"));
        Assert.Equal(("", false), stop.Push("\n"));
        Assert.Equal(("", false), stop.Push(""));     // a token that completes no character yet
        Assert.Equal(("", false), stop.Push("\nQ"));
        Assert.Equal(("", true), stop.Push(":"));
        Assert.Equal("Answer: 42", stop.Text);
    }

    [Fact]
    public void Push_HeldTextThatTurnsOutNotToBeAStop_IsReleasedWithTheNextPiece()
    {
        var stop = new StopDetector([], ["end"]);
        Assert.Equal(("the ", false), stop.Push("the e"));
        Assert.Equal(("enter", false), stop.Push("nter"));
        Assert.Equal("the enter", stop.Text);
    }

    [Fact]
    public void Push_SequenceSplitAtAPieceBoundary_CutsBeforeIt()
    {
        var stop = new StopDetector([], ["end"]);
        Assert.Equal(("the ", false), stop.Push("the e"));
        Assert.Equal(("", true), stop.Push("nding"));
        Assert.Equal("the ", stop.Text);
    }

    [Fact]
    public void Push_TwoSequences_TheEarliestInTheTextWins()
    {
        var stop = new StopDetector([], ["b", "cd"]);
        Assert.Equal(("xx", true), stop.Push("xxcdyyb"));
    }

    [Fact]
    public void Push_AfterTheStop_Throws()
    {
        var stop = new StopDetector([], ["x"]);
        stop.Push("x");
        Assert.Throws<InvalidOperationException>(() => stop.Push("y"));
    }

    [Fact]
    public void Finish_ReleasesHeldTextThenTheTail_OnceOnly()
    {
        var stop = new StopDetector([], ["\n\n"]);
        Assert.Equal(("x = 1", false), stop.Push("x = 1\n"));
        Assert.Equal("\n\uFFFD", stop.Finish("\uFFFD"));
        Assert.Equal("", stop.Finish(""));
        Assert.Equal("x = 1\n\uFFFD", stop.Text);
    }
}
