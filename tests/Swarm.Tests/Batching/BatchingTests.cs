using Swarm.Checkpoints;
using Swarm.Model;
using Swarm.Node;
using Swarm.Tests.Model;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Swarm.Tests.Batching;

/// <summary>Continuous batching and the paged KV cache: batching never changes results; the pool never leaks.</summary>
public class BatchingTests(ITestOutputHelper output)
{
    /// <summary>
    /// 16 jobs of mixed prompt and output lengths, arriving at different iterations. Prompts are a fixture prompt
    /// followed by the first k tokens of its greedy continuation, so the expected output is the rest of the golden
    /// greedy continuation (whose top-1/top-2 margins are far above float noise).
    /// </summary>
    internal static List<(DriverJob Job, long[] Expected)> MixedJobs(Fixture fx, int count = 16, int stagger = 2)
    {
        var jobs = new List<(DriverJob, long[])>();
        var rng = new Random(5);
        for (int i = 0; i < count; i++)
        {
            int p = i % fx.PromptCount;
            var prompt = fx.Ids($"prompt.{p}");
            var greedy = fx.Ids($"greedy.{p}");
            int k = rng.Next(0, 16);
            int n = rng.Next(1, greedy.Length - k + 1);
            jobs.Add((new DriverJob([.. prompt, .. greedy[..k]], n, i * stagger), greedy[k..(k + n)]));
        }
        return jobs;
    }

    private static StageHost Host(Checkpoint ckpt, int start, int end, BatchingOptions? batching = null, long kvBudget = 64L << 20) =>
        new(StageModel.Load(ckpt, start, end), kvBudget, batching: batching);

    [Fact]
    public void StageHost_SixteenStaggeredMixedJobs_EachProducesWhatItProducesAlone()
    {
        using var fx = new Fixture(Fixture.Small);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        var jobs = MixedJobs(fx, stagger: 1);
        // Small chunks and budget: long prompts are split and interleaved with running decodes.
        using var host = Host(ckpt, 0, ckpt.Config.NumLayers, new BatchingOptions { PrefillChunk = 16, MaxBatchTokens = 40 });

        var alone = jobs.Select(j => new BatchDriver([host]).Run([j.Job with { ArrivesAt = 0 }])[0]).ToList();
        using var batchedHost = Host(ckpt, 0, ckpt.Config.NumLayers, new BatchingOptions { PrefillChunk = 16, MaxBatchTokens = 40 });
        var driver = new BatchDriver([batchedHost]);
        var together = driver.Run(jobs.Select(j => j.Job).ToList());

        int peak = batchedHost.Stats.PeakBatch;
        output.WriteLine($"{driver.Rounds} iterations, up to {peak} sequences in one batched forward");
        Assert.True(peak >= 8, $"the jobs were hardly batched (at most {peak} sequences per iteration)");
        for (int i = 0; i < jobs.Count; i++)
        {
            Assert.Equal(jobs[i].Expected.Select(t => (int)t), alone[i]);
            Assert.Equal(alone[i], together[i]);
        }
        Assert.Equal(0, batchedHost.Sessions);
        Assert.Equal(0, batchedHost.KvBlocksUsed);
    }

    [Fact]
    public void ThreeStageHosts_PipelinedStaggeredJobs_MatchGoldenGreedy()
    {
        using var fx = new Fixture(Fixture.Small);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        var jobs = MixedJobs(fx, stagger: 1);
        var batching = new BatchingOptions { PrefillChunk = 24, MaxBatchTokens = 64 };
        using var a = Host(ckpt, 0, 2, batching);
        using var b = Host(ckpt, 2, 4, batching);
        using var c = Host(ckpt, 4, 6, batching);
        var driver = new BatchDriver([a, b, c]);
        var got = driver.Run(jobs.Select(j => j.Job).ToList());
        for (int i = 0; i < jobs.Count; i++) Assert.Equal(jobs[i].Expected.Select(t => (int)t), got[i]);
        Assert.All(new[] { a, b, c }, h => Assert.Equal(0, h.KvBlocksUsed));
    }

    [Fact]
    public void StageHost_Burst200JobsOnTinyPool_AllCompleteCorrectly_PoolEmptyAndNoTensorLeak()
    {
        // Tensor statistics are per thread: run on a fresh thread so no other test's tensors are counted.
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try { Burst(); }
            catch (Exception e) { error = e; }
        });
        thread.Start();
        thread.Join();
        Assert.Null(error);
    }

    private void Burst()
    {
        using var fx = new Fixture(Fixture.Tiny);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        var jobs = MixedJobs(fx, count: 200, stagger: 0);
        // The smallest pool a host allows: one full context (256 positions = 16 blocks), a few jobs at a time.
        var host = Host(ckpt, 0, ckpt.Config.NumLayers, new BatchingOptions { PrefillChunk = 32, MaxBatchTokens = 64 }, kvBudget: 1);
        Assert.Equal(16, host.KvBlocksTotal);
        var driver = new BatchDriver([host]);
        var got = driver.Run(jobs.Select(j => j.Job).ToList());
        var stats = host.Stats;
        output.WriteLine($"{driver.Rounds} iterations, {driver.Preemptions} preemptions, peak batch {stats.PeakBatch}");
        for (int i = 0; i < jobs.Count; i++) Assert.Equal(jobs[i].Expected.Select(t => (int)t), got[i]);
        Assert.InRange(stats.PeakBatch, 2, 16); // batched, and never more sequences than the 16 blocks can hold
        Assert.Equal(0, stats.Sessions);
        Assert.Equal(0, stats.KvBlocksUsed);
        Assert.Equal(0, stats.PendingSteps);
        Assert.Equal(0, stats.KvTokensUsed);
        host.Dispose();
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    [Fact]
    public void StageHost_NoAdmissionHeadroom_PreemptsGrowingSessions_ReplaysGiveSameTokens()
    {
        using var fx = new Fixture(Fixture.Tiny);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        // Without headroom every session whose prompt fits is admitted: 16 jobs whose 16-token prompts fill one block
        // each take the whole 16-block pool, then all need a second block at once and nothing can run — the youngest
        // is preempted and replayed on a fresh session (prompt + tokens so far) later. Mixed jobs follow.
        var prompt = fx.Ids("prompt.1");
        var greedy = fx.Ids("greedy.1");
        int k = 16 - prompt.Length;
        var boundary = Enumerable.Range(0, 16).Select(_ => (Job: new DriverJob([.. prompt, .. greedy[..k]], greedy.Length - k, 0), Expected: greedy[k..]));
        var jobs = boundary.Concat(MixedJobs(fx, count: 24, stagger: 1)).ToList();
        using var host = Host(ckpt, 0, ckpt.Config.NumLayers, new BatchingOptions { AdmissionHeadroomBlocks = 0 }, kvBudget: 1);
        var driver = new BatchDriver([host]);
        var got = driver.Run(jobs.Select(j => j.Job).ToList());
        output.WriteLine($"{driver.Preemptions} preemptions in {driver.Rounds} iterations");
        Assert.True(host.Stats.Preemptions > 0, "the pool was never full enough to preempt");
        for (int i = 0; i < jobs.Count; i++) Assert.Equal(jobs[i].Expected.Select(t => (int)t), got[i]);
        Assert.Equal(0, host.KvBlocksUsed);
    }

    [Fact]
    public void StageHost_PoolFull_NewSessionWaitsInsteadOfFailing_AndRunsWhenBlocksReturn()
    {
        using var fx = new Fixture(Fixture.Tiny);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        using var host = Host(ckpt, 0, ckpt.Config.NumLayers, new BatchingOptions { PrefillChunk = 32 }, kvBudget: 1);
        Assert.Equal(16, host.KvBlocksTotal);
        var route = new[] { new Swarm.Protocol.Hop { NodeId = 1, Endpoint = "local", Layers = host.Range } };
        Swarm.Protocol.ForwardRequest Prefill(long session, int tokens) => new()
        {
            JobId = session, SessionId = session, Route = route, WireDType = Swarm.Protocol.WireDType.F32,
            Input = Swarm.Protocol.WireTensor.FromTokenIds(Enumerable.Range(0, tokens).Select(i => (long)(i * 7 % 512)).ToArray()),
        };
        host.Submit(Prefill(1, 150), "a");   // 10 blocks, prefilled in 5 chunks
        host.Submit(Prefill(2, 100), "b");   // 7 blocks: does not fit next to a
        var done = new List<StepCompletion>();
        for (int i = 0; i < 5; i++)
        {
            done.AddRange(host.RunIteration());
            Assert.Equal(10, host.KvBlocksUsed);        // a's whole prompt stays reserved while it is chunked
            Assert.Equal(1, host.Stats.WaitingSessions);
        }
        Assert.Equal("a", Assert.Single(done).State);
        Assert.NotNull(done[0].Output!.Token);
        Assert.False(host.HasWork);                      // b waits for blocks; nothing fails
        Assert.True(host.Close(1));
        Assert.True(host.HasWork);
        var b = host.RunIteration().Concat(host.RunIteration()).Concat(host.RunIteration()).Concat(host.RunIteration()).ToList();
        Assert.Equal("b", Assert.Single(b).State);
        Assert.NotNull(b[0].Output!.Token);
        Assert.Equal(7, host.KvBlocksUsed);
        Assert.True(host.Close(2));
        Assert.Equal(0, host.KvBlocksUsed);
    }

    [Fact]
    public void StageHost_BlockedWhileOthersAreElsewhere_WaitsThenPreemptsTheYoungest()
    {
        using var fx = new Fixture(Fixture.Tiny);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        var clock = new Swarm.Tests.Coordinator.ManualTimeProvider();
        using var host = new StageHost(StageModel.Load(ckpt, 0, ckpt.Config.NumLayers), 1, clock,
            new BatchingOptions { AdmissionHeadroomBlocks = 0, PreemptAfter = TimeSpan.FromSeconds(2) });
        var route = new[] { new Swarm.Protocol.Hop { NodeId = 1, Endpoint = "local", Layers = host.Range } };
        Swarm.Protocol.ForwardRequest Step(long session, int start, long[] ids) => new()
        {
            JobId = session, SessionId = session, Step = start == 0 ? 0 : 1, StartPosition = start, Route = route,
            Input = Swarm.Protocol.WireTensor.FromTokenIds(ids),
        };
        var prompt = Enumerable.Range(1, 16).Select(i => (long)i).ToArray();   // exactly one block
        for (long s = 1; s <= 16; s++) host.Submit(Step(s, 0, prompt), s);
        Assert.Equal(16, host.RunIteration().Count(c => c.Output is not null));
        Assert.Equal(16, host.KvBlocksUsed);                                    // the pool is full

        host.Submit(Step(1, 16, [5]), 1L);                                      // needs a 2nd block; 2…16 are "on other stages"
        Assert.Empty(host.RunIteration());
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Empty(host.RunIteration());
        Assert.Equal(0, host.Stats.Preemptions);                                // they may still come back and free blocks
        clock.Advance(TimeSpan.FromSeconds(1.5));
        host.RunIteration();                                                    // waited long enough: the youngest (16) goes
        Assert.Equal(1, host.Stats.Preemptions);
        var next = host.RunIteration();
        Assert.Equal(1L, Assert.Single(next).State);
        Assert.NotNull(next[0].Output!.Token);

        host.Submit(Step(16, 16, [5]), 16L);                                    // the preempted session's next step is told why
        var told = Assert.Single(host.RunIteration());
        Assert.Equal(Swarm.Protocol.ErrorCode.Overloaded, told.Error!.Code);
    }

    [Fact]
    public void StageHost_TokenIdOutsideVocabulary_FailsThatStepWithBadRequest_OtherSessionUnaffected()
    {
        using var fx = new Fixture(Fixture.Tiny);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        using var host = Host(ckpt, 0, ckpt.Config.NumLayers);
        int vocab = ckpt.Config.VocabSize;
        var route = new[] { new Swarm.Protocol.Hop { NodeId = 1, Endpoint = "local", Layers = host.Range } };
        Swarm.Protocol.ForwardRequest Step(long session, int step, int start, long[] ids) => new()
        {
            JobId = session, SessionId = session, Step = step, StartPosition = start, Route = route,
            Kind = start == 0 ? Swarm.Protocol.StepKind.Prefill : Swarm.Protocol.StepKind.Decode,
            Input = Swarm.Protocol.WireTensor.FromTokenIds(ids),
        };
        var prompt = fx.Ids("prompt.0");
        var errors = new Dictionary<string, StepException>();
        var tokens = new List<long>();
        long[] input = prompt;
        int position = 0;
        for (int step = 0; step < 4; step++)
        {
            host.Submit(Step(1, step, position, input), "good");
            if (step == 1)
            {
                // As they would arrive from the network, between the good session's steps.
                host.Submit(Step(2, 0, 0, [1, vocab, 3]), "too large");
                host.Submit(Step(3, 0, 0, [-1]), "negative");
            }
            StepCompletion? good = null;
            for (int i = 0; i < 100 && good is null; i++)
                foreach (var c in host.RunIteration())
                {
                    if ((string)c.State! == "good") good = c;
                    else errors[(string)c.State!] = c.Error!;
                }
            Assert.NotNull(good);
            Assert.Null(good!.Error);
            tokens.Add(good.Output!.Token!.Value);
            position += input.Length;
            input = [tokens[^1]];
        }

        Assert.Equal(fx.Ids("greedy.0")[..4], tokens);
        Assert.Equal(Swarm.Protocol.ErrorCode.BadRequest, errors["too large"].Code);
        Assert.Equal($"token id {vocab} is outside the vocabulary [0, {vocab})", errors["too large"].Message);
        Assert.Equal(Swarm.Protocol.ErrorCode.BadRequest, errors["negative"].Code);
        Assert.Equal($"token id -1 is outside the vocabulary [0, {vocab})", errors["negative"].Message);
        Assert.Equal(1, host.Sessions);                 // the rejected steps opened no session and hold no KV
        Assert.True(host.Close(1));
        Assert.Equal(0, host.KvBlocksUsed);
    }

    [Fact]
    public void ForwardBatch_MixedDecodesAndChunks_MatchesEachSequenceAlone()
    {
        using var fx = new Fixture(Fixture.Small);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        using var model = StageModel.Load(ckpt, 0, ckpt.Config.NumLayers);
        using var pool = model.NewBlockPool(64, blockSize: 8);
        var prompts = Enumerable.Range(0, fx.PromptCount).Select(p => fx.Ids($"prompt.{p}")).ToArray();
        var seqs = prompts.Select(_ => pool.NewSequence()).ToArray();
        var alone = prompts.Select(_ => new StageSession(model)).ToArray();
        try
        {
            double worst = 0;
            // Round r: sequence i feeds a chunk of 5 prompt tokens, or once its prompt is in, one token.
            var fed = new int[prompts.Length];
            for (int round = 0; round < 20; round++)
            {
                var items = new List<BatchItem>();
                var inputs = new List<Tensor>();
                for (int i = 0; i < prompts.Length; i++)
                {
                    int t = fed[i] < prompts[i].Length ? Math.Min(5, prompts[i].Length - fed[i]) : 1;
                    long[] ids = fed[i] < prompts[i].Length ? prompts[i][fed[i]..(fed[i] + t)] : [(fed[i] * 7 + i) % 2048];
                    var x = tensor(ids, ScalarType.Int64);
                    inputs.Add(x);
                    Assert.True(pool.TryReserve(seqs[i], seqs[i].Length + t));
                    items.Add(new BatchItem(x, seqs[i]));
                    fed[i] += t;
                }
                var batched = model.ForwardBatch(items, pool, 0, ckpt.Config.NumLayers);
                for (int i = 0; i < prompts.Length; i++)
                {
                    using var single = alone[i].Forward(inputs[i]);
                    using var diff = (single - batched[i]!).abs().max();
                    worst = Math.Max(worst, diff.item<float>());
                    Assert.Equal(alone[i].Length, seqs[i].Length);
                }
                foreach (var t in batched) t?.Dispose();
                foreach (var x in inputs) x.Dispose();
            }
            output.WriteLine($"max |Δlogits| batched vs alone: {worst:E2}");
            Assert.True(worst < 1e-4, $"batched logits differ from those of each sequence alone by {worst}");
        }
        finally
        {
            foreach (var c in alone) c.Dispose();
            foreach (var s in seqs) pool.Release(s);
        }
        Assert.Equal(0, pool.UsedBlocks);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(5)]
    [InlineData(16)]
    [InlineData(40)]
    public void LinearF32_WideOutput_AnyRowCount_MatchesPlainMatmul(int rows)
    {
        using var scope = NewDisposeScope();
        var w = randn(2048, 64, generator: new Generator(7));
        var b = randn(2048, generator: new Generator(8));
        var x = randn(rows, 64, generator: new Generator(9));
        var expected = x.matmul(w.t()) + b;
        using var dense = LinearWeights.Create(w.clone(), b.clone(), WeightFormat.F32, parallelism: 2);
        var y = dense.Forward(x);
        Assert.Equal(expected.shape, y.shape);
        Assert.True((y - expected).abs().max().item<float>() < 1e-4f);
    }

    [Fact]
    public void KvBlockPool_ReserveTruncateRelease_TracksBlocksExactly()
    {
        using var pool = new KvBlockPool(layers: 2, heads: 2, headDim: 4, ScalarType.Float32, totalBlocks: 5, blockSize: 4);
        var a = pool.NewSequence();
        var b = pool.NewSequence();
        Assert.True(pool.TryReserve(a, 9));      // 3 blocks
        Assert.Equal(3, pool.UsedBlocks);
        Assert.False(pool.TryReserve(b, 9));     // 3 more do not fit: nothing is taken
        Assert.Equal(0, b.BlockCount);
        Assert.True(pool.TryReserve(b, 8));
        Assert.Equal(0, pool.FreeBlocks);
        a.Length = 9;
        pool.Truncate(a, 4);                     // keeps 1 block
        Assert.Equal(1, a.BlockCount);
        Assert.Equal(2, pool.FreeBlocks);
        Assert.Equal(a.Slot(3), a.Slot(0) + 3);
        pool.Release(a);
        pool.Release(b);
        Assert.Equal(0, pool.UsedBlocks);
        Assert.Throws<ArgumentException>(() => new KvBlockPool(1, 1, 1, ScalarType.Float32, 1).TryReserve(a, 1));
    }
}
