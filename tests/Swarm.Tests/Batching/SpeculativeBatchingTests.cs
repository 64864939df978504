using Swarm.Checkpoints;
using Swarm.Cli;
using Swarm.Model;
using Swarm.Node;
using Swarm.Tests.Model;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Batching;

/// <summary>
/// Speculative steps through real stage hosts (<see cref="BatchDriver"/> playing the coordinator): each step carries the
/// last token plus drafted ones, every stage runs them batched with other jobs' steps and prefill chunks, the last stage
/// accepts a prefix, and the next step's start position truncates the rejected positions on every stage. The drafts are
/// the reference continuation with a wrong token planted at a varying place, so passes are accepted in full, in part and
/// not at all. Greedy output must equal plain decoding: the HF reference for the fixtures, plain runs for codelm-tiny.
/// </summary>
public class SpeculativeBatchingTests(ITestOutputHelper output)
{
    /// <summary>
    /// Drafts for job j after its tokens so far: the next <c>min(room, 4)</c> tokens of <paramref name="reference"/>, with
    /// the one at position (tokens so far mod 5) made wrong — past the draft's end on a fifth of the passes.
    /// </summary>
    private static Func<int, IReadOnlyList<int>, int, int[]> PlantedDrafts(IReadOnlyList<IReadOnlyList<int>> reference, int vocab) =>
        (job, tokens, room) =>
        {
            var rest = reference[job].Skip(tokens.Count).Take(Math.Min(room, 4)).ToArray();
            int wrong = tokens.Count % 5;
            if (wrong < rest.Length) rest[wrong] = (rest[wrong] + 1) % vocab;
            return rest;
        };

    private static StageHost Host(Checkpoint ckpt, int start, int end, BatchingOptions batching, TensorParallelOptions? tp = null) =>
        new(StageModel.Load(ckpt, start, end, tensorParallel: tp), 64L << 20, batching: batching);

    [Theory]
    [InlineData(Fixture.Tiny, false)]
    [InlineData(Fixture.Small, false)]
    [InlineData(Fixture.Small, true)]   // the first stage tensor-parallel over 2 CPU shards
    public void ThreeStages_StaggeredJobs_SpeculativeGreedyEqualsTheReference(string name, bool tensorParallel)
    {
        using var fx = new Fixture(name);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        int n = ckpt.Config.NumLayers;
        var jobs = BatchingTests.MixedJobs(fx, count: 12, stagger: 1);
        // Chunks of 3: a prefill's draft positions and the positions before them land in different chunks.
        var batching = new BatchingOptions { PrefillChunk = 3, MaxBatchTokens = 24 };
        using var a = Host(ckpt, 0, n / 3, batching, tensorParallel ? TensorParallelOptions.Cpu(2) : null);
        using var b = Host(ckpt, n / 3, 2 * n / 3, batching);
        using var c = Host(ckpt, 2 * n / 3, n, batching);
        var expected = jobs.Select(j => (IReadOnlyList<int>)[.. j.Expected.Select(t => (int)t)]).ToList();
        var driver = new BatchDriver([a, b, c], PlantedDrafts(expected, ckpt.Config.VocabSize));

        var got = driver.Run(jobs.Select(j => j.Job).ToList());

        var (passes, drafted, accepted) = driver.Speculation;
        output.WriteLine($"{passes} passes with drafts: {accepted}/{drafted} drafted tokens accepted; peak batch {c.Stats.PeakBatch}");
        for (int i = 0; i < jobs.Count; i++) Assert.Equal(expected[i], got[i]);
        Assert.True(accepted > 0 && accepted < drafted, $"{accepted}/{drafted} accepted: both outcomes must occur");
        Assert.True(c.Stats.PeakBatch >= 2, "the speculative steps were never batched with other sessions");
        Assert.All(new[] { a, b, c }, h => Assert.Equal(0, h.KvBlocksUsed));
    }

    [Fact]
    public void SpeculativeSteps_LeaveNoTensorBehind()
    {
        // Tensor statistics are per thread: run on a fresh thread so no other test's tensors are counted.
        Exception? error = null;
        long leaked = -1;
        var thread = new Thread(() =>
        {
            try
            {
                using var fx = new Fixture(Fixture.Tiny);
                using var ckpt = Checkpoint.Open(fx.CheckpointDir);
                long before = TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount;
                var jobs = BatchingTests.MixedJobs(fx, count: 8, stagger: 1);
                var expected = jobs.Select(j => (IReadOnlyList<int>)[.. j.Expected.Select(t => (int)t)]).ToList();
                var batching = new BatchingOptions { PrefillChunk = 5, MaxBatchTokens = 16 };
                var a = Host(ckpt, 0, 1, batching);
                var b = Host(ckpt, 1, ckpt.Config.NumLayers, batching);
                var got = new BatchDriver([a, b], PlantedDrafts(expected, ckpt.Config.VocabSize)).Run(jobs.Select(j => j.Job).ToList());
                for (int i = 0; i < jobs.Count; i++) Assert.Equal(expected[i], got[i]);
                a.Dispose();
                b.Dispose();
                leaked = TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount - before;
            }
            catch (Exception e) { error = e; }
        });
        thread.Start();
        thread.Join();
        Assert.Null(error);
        Assert.Equal(0, leaked);
    }

    [Fact]
    public void CodeModel_TwoStages_SpeculativeGreedyEqualsPlainDecoding()
    {
        var tokenizer = CodeLmBatchJobs.Tokenizer();
        using var ckpt = Checkpoint.Open(BuiltInModels.CodeLmTiny);
        int n = ckpt.Config.NumLayers;
        var jobs = CodeLmBatchJobs.Jobs(tokenizer, 40);
        var batching = CodeLmBatchJobs.Batching;
        var plain = CodeLmBatchJobs.PlainTwoStages(ckpt, jobs);
        using var a2 = Host(ckpt, 0, n / 2, batching);
        using var b2 = Host(ckpt, n / 2, n, batching);
        var driver = new BatchDriver([a2, b2], PlantedDrafts(plain, ckpt.Config.VocabSize));

        var got = driver.Run(jobs);

        var (passes, drafted, accepted) = driver.Speculation;
        output.WriteLine($"codelm-tiny: {passes} passes, {accepted}/{drafted} accepted; first job: {tokenizer.Decode(got[0])}");
        for (int i = 0; i < jobs.Count; i++) Assert.Equal(plain[i], got[i]);
        Assert.True(accepted > 0 && accepted < drafted);
    }
}
