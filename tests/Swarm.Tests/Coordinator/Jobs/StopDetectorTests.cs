using Swarm.Coordinator.Jobs;
using Xunit;

namespace Swarm.Tests.Coordinator.Jobs;

public sealed class StopDetectorTests
{
    [Fact]
    public void Push_StopTokenId_StopsOnThatToken()
    {
        var stop = new StopDetector([7], []);
        Assert.False(stop.Push(5, "x"));
        Assert.True(stop.Push(7, ""));
    }

    [Fact]
    public void Push_StopSequenceArrivesOverSeveralPieces_StopsWhenItCompletes()
    {
        var stop = new StopDetector([], ["\n\nQ:"]);
        Assert.False(stop.Push(1, "Answer: 42"));
        Assert.False(stop.Push(2, "\n"));
        Assert.False(stop.Push(3, ""));     // a token that completes no character yet
        Assert.False(stop.Push(4, "\nQ"));
        Assert.True(stop.Push(5, ":"));
        Assert.Equal("Answer: 42\n\nQ:", stop.Text);
    }

    [Fact]
    public void Push_SequenceSplitAtAPieceBoundary_IsFound()
    {
        var stop = new StopDetector([], ["end"]);
        Assert.False(stop.Push(1, "the e"));
        Assert.True(stop.Push(2, "nding"));
    }

    [Fact]
    public void TrimAtStopSequence_CutsBeforeTheEarliestSequence_LeavesTextWithoutOne()
    {
        var stop = new StopDetector([], ["b", "cd"]);
        Assert.Equal("xx", stop.TrimAtStopSequence("xxcdyyb"));
        Assert.Equal("plain", stop.TrimAtStopSequence("plain"));
    }
}
