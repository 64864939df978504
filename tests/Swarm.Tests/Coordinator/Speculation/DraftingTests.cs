using Swarm.Coordinator.Speculation;
using Xunit;

namespace Swarm.Tests.Coordinator.Speculation;

/// <summary>Prompt lookup (<see cref="NgramDrafter"/>), the adaptive draft length and the check of a last stage's answer.</summary>
public class DraftingTests
{
    [Fact]
    public void Propose_LongestRecurringSuffix_MostRecentOccurrence_ContinuationUpToK()
    {
        var drafter = new NgramDrafter(3);
        // Suffix [7, 8, 9] occurred at 0 (followed by 1, 2, 3) and at 5 (followed by 4, 5): the most recent wins.
        int[] seq = [7, 8, 9, 1, 2, 7, 8, 9, 4, 5, 6, 7, 8, 9];
        Assert.Equal([4, 5], drafter.Propose(seq, 2));
        Assert.Equal([4, 5, 6, 7, 8], drafter.Propose(seq, 5));
        // A continuation that reaches the end goes on as a repetition of the loop it found.
        Assert.Equal([1, 2, 1, 2, 1], drafter.Propose([1, 2, 1, 2], 5));
        Assert.Equal([4, 5, 6, 7, 8, 9, 4], drafter.Propose(seq, 7));
    }

    [Fact]
    public void Propose_FallsBackToShorterSuffixes_AndIsEmptyWithoutAMatch()
    {
        var drafter = new NgramDrafter(3);
        Assert.Equal([5, 6], drafter.Propose([9, 4, 5, 6, 3, 4], 2));  // only [4] recurs
        Assert.Empty(drafter.Propose([1, 2, 3, 4], 4));
        Assert.Empty(drafter.Propose([1, 1], 0));
        Assert.Empty(drafter.Propose([1], 3));
        Assert.Equal([1, 1, 1], drafter.Propose([1, 1], 3));
    }

    [Fact]
    public void DraftLength_GrowsAfterFullAcceptance_ShrinksToWhatWouldHaveSufficed()
    {
        var k = new DraftLength(6);
        Assert.Equal(6, k.Current);
        k.Record(6, 1);
        Assert.Equal(2, k.Current);
        k.Record(2, 2);
        Assert.Equal(3, k.Current);
        k.Record(3, 0);
        Assert.Equal(1, k.Current);
        k.Record(0, 0);            // nothing drafted: no change
        Assert.Equal(1, k.Current);
        for (int i = 0; i < 10; i++) k.Record(k.Current, k.Current);
        Assert.Equal(6, k.Current);
    }

    [Fact]
    public void Accept_ChecksThatTheAnswerIsADraftPrefixPlusOneToken_AndCounts()
    {
        var job = new JobSpeculation(new SpeculationOptions { Mode = SpeculationMode.Ngram, MaxDraft = 4 });
        Assert.Equal([5, 6, 9], job.Accept([5, 6, 7], 5, [5, 6, 9])!);
        Assert.Equal([8], job.Accept([], 8, [])!);
        Assert.Null(job.Accept([5, 6], 5, [5, 7, 1]));       // 7 was never drafted
        Assert.Null(job.Accept([5], 5, [5, 1, 2]));          // more than the draft + 1
        Assert.Null(job.Accept([5], 4, [5, 1]));             // the token is not the first accepted
        Assert.Equal(new SpeculationCounts(2, 2, 3), job.Counts);
        Assert.Equal(2.0, job.Counts.TokensPerPass);
    }
}
