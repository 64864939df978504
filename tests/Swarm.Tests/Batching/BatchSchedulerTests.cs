using Swarm.Node;
using Swarm.Node.Scheduling;
using Swarm.Protocol;
using Swarm.Tests.Coordinator;
using Xunit;

namespace Swarm.Tests.Batching;

/// <summary>
/// The torch-free batch scheduler on plain numbers and a manual clock: admission against the block budget, FIFO
/// fairness, prefill chunking, preemption timing, expiry, and the block changes it reports to the executor.
/// Steps carry a string name as payload.
/// </summary>
public class BatchSchedulerTests
{
    private static readonly LayerRange Layers = new(0, 4);
    private readonly ManualTimeProvider _clock = new();
    private readonly List<KvChange> _changes = [];

    private BatchScheduler<string> Scheduler(int blocks = 16, BatchingOptions? options = null) =>
        new(blocks, options ?? new BatchingOptions(), _clock, _changes.Add);

    /// <summary>Plans and completes one iteration; returns the planned chunks as "name:offset+count" and the finished steps' names.</summary>
    private static (List<string> Chunks, List<string> Finished, List<FailedStep<string>> Failed) Iterate(BatchScheduler<string> s)
    {
        var plan = s.Plan();
        var chunks = plan.Chunks.Select(c => $"{c.Step.Payload}:{c.Offset}+{c.Count}").ToList();
        var finished = plan.Chunks.Count > 0 ? s.Complete(plan).Select(f => f.Payload).ToList() : [];
        return (chunks, finished, plan.Failed.ToList());
    }

    [Fact]
    public void Admission_BlocksShort_NewSessionWaitsAndIsAdmittedWhenBlocksReturn()
    {
        var s = Scheduler(blocks: 16);
        s.Enqueue(1, Layers, 0, 150, "a");        // 10 blocks of 16
        s.Enqueue(2, Layers, 0, 100, "b");        // 7 blocks: 10 + 7 > 16
        var (chunks, finished, _) = Iterate(s);
        Assert.Equal(["a:0+128"], chunks);
        Assert.Empty(finished);
        Assert.Equal(10, s.UsedBlocks);           // a's whole prompt is reserved at admission
        Assert.Equal(1, s.WaitingSessions);
        Assert.False(s.Find(2)!.Value.Admitted);

        (chunks, finished, _) = Iterate(s);
        Assert.Equal(["a:128+22"], chunks);
        Assert.Equal(["a"], finished);
        Assert.False(s.HasWork);                   // b still does not fit; nothing fails

        Assert.NotNull(s.Close(1, new StepException(ErrorCode.Cancelled, "done")));
        Assert.Equal(0, s.UsedBlocks);
        Assert.True(s.HasWork);
        (chunks, _, _) = Iterate(s);
        Assert.Equal(["b:0+100"], chunks);
        Assert.Equal(7, s.UsedBlocks);
        Assert.Equal(0, s.WaitingSessions);
    }

    [Fact]
    public void Admission_Headroom_KeepsOneSpareBlockPerRunningSession()
    {
        var s = Scheduler(blocks: 8);
        for (int i = 1; i <= 8; i++) s.Enqueue(i, Layers, 0, 16, $"s{i}"); // one block each
        Iterate(s);
        // With one spare block per running session, k sessions are admitted while 1 + k ≤ 8 − k: four of them.
        Assert.Equal(4, s.Sessions - s.WaitingSessions);
        Assert.Equal(4, s.UsedBlocks);
    }

    [Fact]
    public void Admission_IsFifo_ASmallSessionDoesNotOvertakeALargerOneWaitingBeforeIt()
    {
        var s = Scheduler(blocks: 16);
        s.Enqueue(1, Layers, 0, 160, "a");        // 10 blocks
        Iterate(s);
        s.Enqueue(2, Layers, 0, 100, "b");        // 7 blocks: must wait
        s.Enqueue(3, Layers, 0, 16, "c");         // 1 block would fit (1 + 1 spare ≤ 6), but b came first
        var (chunks, _, _) = Iterate(s);
        Assert.Equal(["a:128+32"], chunks);
        Assert.Equal(2, s.WaitingSessions);
        Assert.False(s.Find(3)!.Value.Admitted);

        s.Close(1, new StepException(ErrorCode.Cancelled, "done"));
        (chunks, _, _) = Iterate(s);
        Assert.Equal(["b:0+100", "c:0+16"], chunks); // both admitted, in arrival order
    }

    [Fact]
    public void Plan_DecodesFirst_ThenPrefillsInArrivalOrder_WithinTheTokenBudget()
    {
        // Prefills beside decodes unlimited (≥ the batch budget): this is about order and budget only.
        var s = Scheduler(blocks: 64, new BatchingOptions { MaxBatchTokens = 40, PrefillChunk = 32, MinPrefillWhileDecoding = 40 });
        s.Enqueue(1, Layers, 0, 4, "d1");
        s.Enqueue(2, Layers, 0, 4, "d2");
        Iterate(s);                                // both prompts in
        s.Enqueue(3, Layers, 0, 30, "p3");         // prefills arrive before the decodes
        s.Enqueue(4, Layers, 0, 30, "p4");
        s.Enqueue(2, Layers, 4, 1, "d2.next");
        s.Enqueue(1, Layers, 4, 1, "d1.next");
        var (chunks, finished, _) = Iterate(s);
        // Decodes first (in arrival order), then p3 whole, then what is left of the 40-token budget for p4.
        Assert.Equal(["d2.next:0+1", "d1.next:0+1", "p3:0+30", "p4:0+8"], chunks);
        Assert.Equal(["d2.next", "d1.next", "p3"], finished);
        (chunks, finished, _) = Iterate(s);
        Assert.Equal(["p4:8+22"], chunks);
        Assert.Equal(["p4"], finished);
    }

    [Fact]
    public void Plan_LongPrefill_IsChunked_AndDecodesOfOtherSessionsRunAlongsideEveryChunk()
    {
        var s = Scheduler(blocks: 64, new BatchingOptions { PrefillChunk = 128, MinPrefillWhileDecoding = 128 });
        s.Enqueue(1, Layers, 0, 8, "short");
        Iterate(s);
        s.Enqueue(2, Layers, 0, 300, "long");
        int position = 8;
        var seen = new List<string>();
        for (int i = 0; i < 3; i++)
        {
            s.Enqueue(1, Layers, position++, 1, $"decode{i}");
            var plan = s.Plan();
            seen.Add(string.Join(" ", plan.Chunks.Select(c => $"{c.Step.Payload}:{c.Offset}+{c.Count}{(c.Completes ? "!" : "")}")));
            s.Complete(plan);
        }
        Assert.Equal(["decode0:0+1! long:0+128", "decode1:0+1! long:128+128", "decode2:0+1! long:256+44!"], seen);
        Assert.Equal(300, s.Find(2)!.Value.Length);
        Assert.Equal(19, s.Find(2)!.Value.Blocks);  // ⌈300 / 16⌉, reserved at admission
    }

    [Fact]
    public void Plan_PromptsArrivingWhileOthersDecode_AreFedInBoundedSlices()
    {
        var s = Scheduler(blocks: 256); // defaults: chunks of 128, 256 positions an iteration, ≥ 16 beside decodes, spread 4
        for (int i = 1; i <= 20; i++) s.Enqueue(i, Layers, 0, 4, $"s{i}");
        Assert.Equal(20, Iterate(s).Finished.Count);    // no decodes yet: all prompts in one iteration
        s.Enqueue(100, Layers, 0, 100, "p");
        s.Enqueue(101, Layers, 0, 30, "q");
        var seen = new List<string>();
        for (int step = 0; step < 6; step++)
        {
            int decoding = step < 3 ? 20 : 8;          // then twelve sessions finish
            for (int i = 1; i <= decoding; i++) s.Enqueue(i, Layers, 4 + step, 1, $"d{i}");
            var (chunks, _, _) = Iterate(s);
            Assert.Equal(decoding, chunks.Count(c => c.StartsWith('d')));
            seen.Add(string.Join(" ", chunks.Where(c => !c.StartsWith('d'))));
            if (step == 2) for (int i = 9; i <= 20; i++) s.Close(i, new StepException(ErrorCode.Cancelled, "done"));
        }
        // The share is the largest of: the queued prefill positions ÷ 4 (⌈130/4⌉ = 33, then ⌈97/4⌉ = 25), the decode count
        // (20 > ⌈72/4⌉), the floor (16, once only 8 decode); prompts take it in arrival order.
        Assert.Equal(["p:0+33", "p:33+25", "p:58+20", "p:78+16", "p:94+6 q:0+10", "q:10+16"], seen);
    }

    [Fact]
    public void Plan_NoDecodes_PrefillsTakeWholeChunksUpToTheBudget()
    {
        var s = Scheduler(blocks: 256);
        s.Enqueue(1, Layers, 0, 200, "a");
        s.Enqueue(2, Layers, 0, 200, "b");
        Assert.Equal(["a:0+128", "b:0+128"], Iterate(s).Chunks);
        Assert.Equal(["a:128+72", "b:128+72"], Iterate(s).Chunks);
    }

    [Fact]
    public void Options_NoPrefillBesideDecodesOrNoSpread_IsRejected()
    {
        Assert.Throws<ArgumentException>(() => new BatchingOptions { MinPrefillWhileDecoding = 0 }.Validate());
        Assert.Throws<ArgumentException>(() => new BatchingOptions { PrefillSpread = 0 }.Validate());
    }

    /// <summary>Fills a 16-block pool with 16 one-block sessions (prompts of exactly 16 tokens) and runs their prefills.</summary>
    private BatchScheduler<string> FullPool()
    {
        var s = Scheduler(blocks: 16, new BatchingOptions { AdmissionHeadroomBlocks = 0, PreemptAfter = TimeSpan.FromSeconds(2) });
        for (int i = 1; i <= 16; i++) s.Enqueue(i, Layers, 0, 16, $"s{i}");
        Assert.Equal(16, Iterate(s).Finished.Count);
        Assert.Equal(0, s.FreeBlocks);
        return s;
    }

    [Fact]
    public void Preemption_WhileOtherHoldersAreElsewhere_WaitsPreemptAfter_ThenDropsTheYoungest()
    {
        var s = FullPool();
        s.Enqueue(1, Layers, 16, 1, "s1.decode");   // needs a 2nd block; sessions 2…16 are "on other stages"
        Assert.Empty(Iterate(s).Chunks);
        Assert.Equal(TimeSpan.FromSeconds(2), s.PreemptionDueIn);
        _clock.Advance(TimeSpan.FromSeconds(1.5));
        Assert.Empty(Iterate(s).Chunks);
        Assert.Equal(0, s.Preemptions);             // they may still come back and finish
        Assert.Equal(TimeSpan.FromSeconds(0.5), s.PreemptionDueIn);

        _clock.Advance(TimeSpan.FromSeconds(0.6));
        var (chunks, _, failed) = Iterate(s);
        Assert.Empty(chunks);
        Assert.Empty(failed);                       // the victim had no step queued here
        Assert.Equal(1, s.Preemptions);
        Assert.Null(s.Find(16));                    // the youngest admitted session went
        Assert.Null(s.PreemptionDueIn);
        Assert.Equal(["s1.decode:0+1"], Iterate(s).Chunks);

        var told = s.Check(16, Layers, 16, 1);      // its next step learns why
        Assert.Equal(ErrorCode.Overloaded, told!.Code);
    }

    [Fact]
    public void Preemption_EveryHolderBlockedHere_IsImmediate_AndFailsTheVictimsQueuedSteps()
    {
        var s = FullPool();
        for (int i = 1; i <= 16; i++) s.Enqueue(i, Layers, 16, 1, $"s{i}.decode"); // all need a 2nd block, all are here
        var (chunks, _, failed) = Iterate(s);
        Assert.Empty(chunks);
        Assert.Equal(1, s.Preemptions);             // no waiting: nothing elsewhere could free a block
        var victim = Assert.Single(failed);
        Assert.Equal("s16.decode", victim.Step.Payload);
        Assert.Equal(ErrorCode.Overloaded, victim.Error.Code);
        Assert.Equal(["s1.decode:0+1"], Iterate(s).Chunks); // the freed block lets the oldest grow
    }

    [Fact]
    public void Preemption_NeverWhileSomethingRuns()
    {
        var s = FullPool();
        s.Enqueue(1, Layers, 16, 1, "s1.decode");   // blocked
        s.Enqueue(2, Layers, 3, 1, "s2.retry");     // fits in s2's block: runs
        _clock.Advance(TimeSpan.FromSeconds(10));
        Assert.Equal(["s2.retry:0+1"], Iterate(s).Chunks);
        Assert.Equal(0, s.Preemptions);
        Assert.Null(s.PreemptionDueIn);
    }

    [Fact]
    public void ExpireIdle_DropsOnlySessionsIdleLongerThanTheTtl_AndNeverOnesWithQueuedSteps()
    {
        var s = Scheduler(blocks: 16);
        s.Enqueue(1, Layers, 0, 16, "old");
        s.Enqueue(2, Layers, 0, 16, "busy");
        Iterate(s);
        _clock.Advance(TimeSpan.FromSeconds(200));
        s.Enqueue(3, Layers, 0, 16, "young");
        Iterate(s);
        s.Enqueue(2, Layers, 16, 1, "busy.decode"); // queued, not run: session 2 is waited for
        _changes.Clear();
        _clock.Advance(TimeSpan.FromSeconds(150));
        // Sessions 1 and 2 were last used 350 s ago, session 3 150 s ago.
        Assert.Equal([1L], s.ExpireIdle(TimeSpan.FromSeconds(300)));
        Assert.Equal([new KvChange(KvChangeKind.Release, 1, 0)], _changes);
        Assert.Null(s.Find(1));
        Assert.Equal(2, s.Sessions);
        _clock.Advance(TimeSpan.FromSeconds(200));
        Assert.Equal([3L], s.ExpireIdle(TimeSpan.FromSeconds(300)));
        Assert.Equal(1, s.Find(2)!.Value.QueuedSteps);
        Assert.Equal(1, s.UsedBlocks);
    }

    [Fact]
    public void KvChanges_DescribeEveryLedgerChange_InOrder()
    {
        var s = Scheduler(blocks: 16);
        s.Enqueue(7, Layers, 0, 40, "prompt");     // 3 blocks
        Iterate(s);
        s.Enqueue(7, Layers, 40, 9, "grow");       // 49 positions: a 4th block
        Iterate(s);
        s.Enqueue(7, Layers, 10, 2, "retry");      // replayed from position 10: cut back to 1 block
        Iterate(s);
        s.Close(7, new StepException(ErrorCode.Cancelled, "done"));
        Assert.Equal([
            new KvChange(KvChangeKind.Reserve, 7, 40),
            new KvChange(KvChangeKind.Reserve, 7, 49),
            new KvChange(KvChangeKind.Truncate, 7, 10),
            new KvChange(KvChangeKind.Release, 7, 0),
        ], _changes);
        Assert.Equal(0, s.UsedBlocks);
    }

    [Fact]
    public void Plan_StepStartingBeyondTheCachedPositions_FailsAsUnknownSession()
    {
        var s = Scheduler();
        s.Enqueue(1, Layers, 0, 5, "prompt");
        Iterate(s);
        s.Enqueue(1, Layers, 9, 1, "gap");
        var (chunks, _, failed) = Iterate(s);
        Assert.Empty(chunks);
        Assert.Equal(ErrorCode.UnknownSession, Assert.Single(failed).Error.Code);
        Assert.Equal(5, s.Find(1)!.Value.Length);   // the session itself stays
    }

    [Theory]
    [InlineData(5L, 0, 257, ErrorCode.OutOfMemory, "needs 257 KV positions; this node's pool holds 256")]
    [InlineData(5L, 3, 1, ErrorCode.UnknownSession, "session 5 is unknown here")]
    [InlineData(1L, 0, 4, ErrorCode.BadRequest, "session 1 uses layers [0,4) here, not [4,8)")]
    public void Check_RefusesWhatCannotBeQueued_WithTheReason(long session, int start, int tokens, ErrorCode code, string message)
    {
        var s = Scheduler(blocks: 16);
        s.Enqueue(1, Layers, 0, 4, "existing");
        var layers = code == ErrorCode.BadRequest ? new LayerRange(4, 8) : Layers;
        var refused = s.Check(session, layers, start, tokens);
        Assert.Equal(code, refused!.Code);
        Assert.Contains(message, refused.Message);
        Assert.Equal(code, Assert.Throws<StepException>(() => s.Enqueue(session, layers, start, tokens, "x")).Code);
    }

    [Fact]
    public void Plan_WithAnOpenPlan_Throws()
    {
        var s = Scheduler();
        s.Enqueue(1, Layers, 0, 4, "a");
        var plan = s.Plan();
        Assert.Throws<InvalidOperationException>(() => s.Plan());
        Assert.Throws<InvalidOperationException>(() => s.Close(1, new StepException(ErrorCode.Cancelled, "x")));
        var failed = s.Abandon(plan, new StepException(ErrorCode.Internal, "forward failed"));
        Assert.Equal("a", Assert.Single(failed).Step.Payload);
        Assert.Equal(0, s.Sessions);
        Assert.Equal(0, s.UsedBlocks);
    }
}
