using Swarm.Checkpoints;
using Swarm.Cli;
using Swarm.Model;
using Swarm.Node;
using Swarm.Node.Drafting;
using Swarm.Tests.Model;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Batching;

/// <summary>
/// Draft-model speculation through real stage hosts (<see cref="BatchDriver"/> playing the coordinator): the last host
/// runs a <see cref="DraftModelRunner"/>, every step asks it for k drafted tokens after its own, and the next step verifies
/// them through every stage, batched with other jobs' steps and prefill chunks. Greedy output must equal plain decoding —
/// with the target as its own draft (nearly every draft accepted) and with codelm-tiny's trained 1-layer draft (some
/// accepted, some not) — and the draft caches must be freed with their sessions, leaving no tensor behind.
/// </summary>
public class DraftModelBatchingTests(ITestOutputHelper output)
{
    private static StageHost Host(Checkpoint ckpt, int start, int end, BatchingOptions batching, DraftModelRunner? drafter = null) =>
        new(StageModel.Load(ckpt, start, end), 64L << 20, batching: batching, drafter: drafter);

    [Fact]
    public void ThreeStages_DraftIsTheTarget_GreedyEqualsTheReference_AndNearlyEveryDraftIsAccepted()
    {
        using var fx = new Fixture(Fixture.Small);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        int n = ckpt.Config.NumLayers;
        var jobs = BatchingTests.MixedJobs(fx, count: 8, stagger: 1);
        var batching = new BatchingOptions { PrefillChunk = 3, MaxBatchTokens = 24 };
        using var drafter = DraftModelRunner.Load(fx.CheckpointDir, WeightFormat.F32, kvTokens: 4096);
        using var a = Host(ckpt, 0, n / 3, batching);
        using var b = Host(ckpt, n / 3, 2 * n / 3, batching);
        using var c = Host(ckpt, 2 * n / 3, n, batching, drafter);
        var driver = new BatchDriver([a, b, c], modelDraft: 4);

        var got = driver.Run(jobs.Select(j => j.Job).ToList());

        var (passes, drafted, accepted) = driver.Speculation;
        output.WriteLine($"{passes} passes with drafts: {accepted}/{drafted} drafted tokens accepted; peak batch {c.Stats.PeakBatch}");
        for (int i = 0; i < jobs.Count; i++) Assert.Equal(jobs[i].Expected.Select(t => (int)t), got[i]);
        Assert.True(drafted > 0 && accepted >= 0.9 * drafted, $"{accepted}/{drafted} accepted: a draft equal to the target should almost always be");
        Assert.True(c.Stats.PeakBatch >= 2, "the verifying steps were never batched with other sessions");
        Assert.Equal(0, drafter.Sessions);   // closed with the sessions
        Assert.All(new[] { a, b, c }, h => Assert.Equal(0, h.KvBlocksUsed));
    }

    [Fact]
    public void CodeModel_TrainedDraft_GreedyEqualsPlainDecoding()
    {
        var tokenizer = CodeLmBatchJobs.Tokenizer();
        using var ckpt = Checkpoint.Open(BuiltInModels.CodeLmTiny);
        int n = ckpt.Config.NumLayers;
        var jobs = CodeLmBatchJobs.Jobs(tokenizer, 48);
        var batching = CodeLmBatchJobs.Batching;
        var plain = CodeLmBatchJobs.PlainTwoStages(ckpt, jobs);
        using var drafter = DraftModelRunner.Load(BuiltInModels.CodeLmTinyDraft, WeightFormat.F32, kvTokens: 4096);
        using var a2 = Host(ckpt, 0, n / 2, batching);
        using var b2 = Host(ckpt, n / 2, n, batching, drafter);
        var driver = new BatchDriver([a2, b2], modelDraft: 4);

        var got = driver.Run(jobs);

        var (passes, drafted, accepted) = driver.Speculation;
        int tokens = got.Sum(g => g.Count);
        output.WriteLine($"codelm-tiny + draft: {tokens} tokens in {passes + jobs.Count} passes, {accepted}/{drafted} drafted tokens accepted; first job: {tokenizer.Decode(got[0])}");
        for (int i = 0; i < jobs.Count; i++) Assert.Equal(plain[i], got[i]);
        Assert.True(accepted > 0 && accepted < drafted, $"{accepted}/{drafted} accepted: a trained 1-layer draft agrees with the target often, not always");
    }

    [Fact]
    public void DraftModelSteps_LeaveNoTensorBehind()
    {
        // Tensor statistics are per thread: run on a fresh thread so no other test's tensors are counted. The first run
        // warms up what the process creates once (static tables of the engine); the second must leave nothing.
        Exception? error = null;
        long leaked = -1;
        var thread = new Thread(() =>
        {
            try
            {
                using var fx = new Fixture(Fixture.Tiny);
                using var ckpt = Checkpoint.Open(fx.CheckpointDir);
                var jobs = BatchingTests.MixedJobs(fx, count: 6, stagger: 1);
                void Run()
                {
                    var batching = new BatchingOptions { PrefillChunk = 5, MaxBatchTokens = 16 };
                    var drafter = DraftModelRunner.Load(fx.CheckpointDir, WeightFormat.F32, kvTokens: 2048);
                    var a = Host(ckpt, 0, 1, batching);
                    var b = Host(ckpt, 1, ckpt.Config.NumLayers, batching, drafter);
                    var got = new BatchDriver([a, b], modelDraft: 3).Run(jobs.Select(j => j.Job).ToList());
                    for (int i = 0; i < jobs.Count; i++) Assert.Equal(jobs[i].Expected.Select(t => (int)t), got[i]);
                    a.Dispose();
                    b.Dispose();
                    drafter.Dispose();
                }
                Run();
                long before = TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount;
                Run();
                leaked = TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount - before;
            }
            catch (Exception e) { error = e; }
        });
        thread.Start();
        thread.Join();
        Assert.Null(error);
        Assert.Equal(0, leaked);
    }
}
