using Swarm.Checkpoints;
using Swarm.Model;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Swarm.Tests.Model;

public class MemoryTests
{
    [Fact]
    public void Decode_200Steps_LiveTensorCountStaysFlat()
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
                using var model = StageModel.Load(ckpt, 0, ckpt.Config.NumLayers);
                using var cache = model.NewCache(initialCapacity: 256);
                var stats = DisposeScopeManager.Statistics;
                long[] next = [1, 2, 3];
                for (int step = 0; step < 200; step++)
                {
                    using var ids = tensor(next, [1, next.Length], ScalarType.Int64);
                    using var logits = model.Forward(ids, cache);
                    using var best = logits.argmax(-1);
                    next = [best.item<long>()];
                    if (step == 9) after10 = stats.ThreadTotalLiveCount;
                    if (step == 99) after100 = stats.ThreadTotalLiveCount;
                    if (step == 199) after200 = stats.ThreadTotalLiveCount;
                }
                length = cache.Length;
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
    public void KvCache_Dispose_FreesEveryBuffer()
    {
        using var fx = new Fixture(Fixture.Tiny);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        using var model = StageModel.Load(ckpt, 0, ckpt.Config.NumLayers);
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        var cache = model.NewCache(initialCapacity: 4);
        using (var ids = ones(1, 40, ScalarType.Int64))
        using (var l = model.Forward(ids, cache)) { }
        Assert.True(cache.AllocatedBytes >= 40 * model.KvBytesPerToken);
        Assert.True(DisposeScopeManager.Statistics.ThreadTotalLiveCount > before);
        cache.Dispose();
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    [Fact]
    public void KvBytesPerToken_MatchesFormula()
    {
        var c = Swarm.Model.Presets.Get("pythia-160m");
        // keys + values, hidden 768, f32
        Assert.Equal(2 * 768 * 4, KvCache.BytesPerTokenPerLayer(c, ScalarType.Float32));
        Assert.Equal(2 * 768 * 2, KvCache.BytesPerTokenPerLayer(c, ScalarType.BFloat16));
    }
}
