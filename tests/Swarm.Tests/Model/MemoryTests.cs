using Swarm.Checkpoints;
using Swarm.Model;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Swarm.Tests.Model;

public class MemoryTests
{
    public static TheoryData<WeightFormat> Formats => [.. WeightFormats.All];

    [Theory]
    [MemberData(nameof(Formats))]
    public void Decode_200Steps_OneSession_LiveTensorCountStaysFlat(WeightFormat format)
    {
        // Tensor statistics are per thread: run on a fresh thread so no other test's tensors are counted.
        long after10 = 0, after100 = 0, after200 = 0;
        int length = 0;
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var fx = new Fixture(Fixture.Small);
                using var ckpt = Checkpoint.Open(fx.CheckpointDir);
                using var model = StageModel.Load(ckpt, 0, ckpt.Config.NumLayers, format);
                using var session = new StageSession(model, fragmented: true);
                var stats = DisposeScopeManager.Statistics;
                long[] next = [1, 2, 3];
                for (int step = 0; step < 200; step++)
                {
                    using var ids = tensor(next, [1, next.Length], ScalarType.Int64);
                    using var logits = session.Forward(ids);
                    using var best = logits.argmax(-1);
                    next = [best.item<long>()];
                    if (step == 9) after10 = stats.ThreadTotalLiveCount;
                    if (step == 99) after100 = stats.ThreadTotalLiveCount;
                    if (step == 199) after200 = stats.ThreadTotalLiveCount;
                }
                length = session.Length;
            }
            catch (Exception e) { error = e; }
        });
        thread.Start();
        thread.Join();
        Assert.Null(error);
        Assert.Equal(202, length);
        Assert.Equal(after10, after100);
        Assert.Equal(after10, after200);
    }

    [Fact]
    public void BatchedDecode_200Iterations_LiveTensorCountStaysFlat_PoolEmptiesAfterRelease()
    {
        long after10 = 0, after100 = 0, after200 = 0;
        int usedAfterRelease = -1;
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var fx = new Fixture(Fixture.Small);
                using var ckpt = Checkpoint.Open(fx.CheckpointDir);
                using var model = StageModel.Load(ckpt, 0, ckpt.Config.NumLayers);
                using var pool = model.NewBlockPool(256);
                var seqs = Enumerable.Range(0, 4).Select(_ => pool.NewSequence()).ToArray();
                var stats = DisposeScopeManager.Statistics;
                var next = new long[][] { [1, 2, 3], [4], [5, 6], [7, 8, 9, 10] };
                for (int step = 0; step < 200; step++)
                {
                    var inputs = next.Select(ids => tensor(ids, ScalarType.Int64)).ToArray();
                    for (int i = 0; i < seqs.Length; i++) Assert.True(pool.TryReserve(seqs[i], seqs[i].Length + next[i].Length));
                    var logits = model.ForwardBatch(seqs.Select((s, i) => new BatchItem(inputs[i], s)).ToList(), pool, 0, ckpt.Config.NumLayers);
                    for (int i = 0; i < seqs.Length; i++)
                    {
                        using var best = logits[i]!.argmax(-1);
                        next[i] = [best.item<long>()];
                    }
                    foreach (var t in logits) t!.Dispose();
                    foreach (var t in inputs) t.Dispose();
                    if (step == 9) after10 = stats.ThreadTotalLiveCount;
                    if (step == 99) after100 = stats.ThreadTotalLiveCount;
                    if (step == 199) after200 = stats.ThreadTotalLiveCount;
                }
                foreach (var s in seqs) pool.Release(s);
                usedAfterRelease = pool.UsedBlocks;
            }
            catch (Exception e) { error = e; }
        });
        thread.Start();
        thread.Join();
        Assert.Null(error);
        // The pool's storage grows by replacing its per-layer tensors, so the count of live tensors never changes.
        Assert.Equal(after10, after100);
        Assert.Equal(after10, after200);
        Assert.Equal(0, usedAfterRelease);
    }

    [Fact]
    public void KvBlockPool_Dispose_FreesEveryBuffer()
    {
        using var fx = new Fixture(Fixture.Tiny);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        using var model = StageModel.Load(ckpt, 0, ckpt.Config.NumLayers);
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        var session = new StageSession(model, blockSize: 4);
        using (var ids = ones(40, ScalarType.Int64))
        using (var l = session.Forward(ids)) { }
        Assert.True(session.Pool.AllocatedBytes >= 40 * model.KvBytesPerToken);
        Assert.True(DisposeScopeManager.Statistics.ThreadTotalLiveCount > before);
        session.Dispose();
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    [Fact]
    public void KvBytesPerToken_MatchesFormula()
    {
        var c = Swarm.Model.Presets.Get("pythia-160m");
        // keys + values, hidden 768, f32
        Assert.Equal(2 * 768 * 4, KvBlockPool.BytesPerTokenPerLayer(c, ScalarType.Float32));
        Assert.Equal(2 * 768 * 2, KvBlockPool.BytesPerTokenPerLayer(c, ScalarType.BFloat16));
    }
}
