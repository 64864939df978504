using Swarm.Checkpoints;
using Swarm.Model;
using Xunit;
using static TorchSharp.torch;

namespace Swarm.Tests.Model;

/// <summary>
/// How a batched step's decodes read their keys and values: one strided view when every decode is at the same length
/// over consecutive blocks (a session alone, or equal sessions reserved up front — <c>swarm run</c> and the local bench),
/// one padded gather otherwise; and that both give the same logits.
/// </summary>
public class BatchPlanTests
{
    private static KvBlockPool Pool() => new(layers: 1, heads: 2, headDim: 4, ScalarType.Float32, totalBlocks: 32, blockSize: 4);

    private static BatchPlan DecodePlan(params KvSequence[] seqs)
    {
        var items = seqs.Select(s => new BatchItem(zeros(1, ScalarType.Int64), s)).ToList();
        return BatchPlan.Build(items, seqs.Select(_ => 1).ToArray(), Enumerable.Range(0, seqs.Length).ToArray(), seqs.Length);
    }

    [Fact]
    public void EqualDecodesOverConsecutiveBlocks_ReadOneStridedWindowEach()
    {
        using var scope = NewDisposeScope();
        using var pool = Pool();
        var seqs = Enumerable.Range(0, 3).Select(_ => pool.NewSequence()).ToArray();
        foreach (var s in seqs)
        {
            Assert.True(pool.TryReserve(s, 12)); // three blocks each, one after the other
            s.Length = 9;
        }
        var plan = DecodePlan(seqs);
        Assert.Null(plan.DecodeSlots);
        Assert.Null(plan.DecodeMask);
        Assert.Equal(seqs[0].Slot(0), plan.DecodeStart);
        Assert.Equal(12, plan.DecodeStride);
        Assert.Equal(10, plan.DecodeLength);
        Assert.Equal(seqs[2].Slot(0), plan.DecodeStart + 2 * plan.DecodeStride);
    }

    [Fact]
    public void DecodesOfDifferentLengths_GatherPaddedAndMasked()
    {
        using var scope = NewDisposeScope();
        using var pool = Pool();
        var a = pool.NewSequence();
        var b = pool.NewSequence();
        Assert.True(pool.TryReserve(a, 12));
        Assert.True(pool.TryReserve(b, 12));
        a.Length = 9;
        b.Length = 5;
        var plan = DecodePlan(a, b);
        Assert.Equal(10, plan.DecodeLength);
        Assert.Equal(b.Slot(5), plan.DecodeSlots![10 + 5].item<long>());
        Assert.Equal(b.Slot(0), plan.DecodeSlots[10 + 6].item<long>());   // padding reads the sequence's own position 0 …
        Assert.False(plan.DecodeMask![1, 0, 0, 6].item<bool>());            // … and is masked out
        Assert.True(plan.DecodeMask[0, 0, 0, 9].item<bool>());
    }

    [Fact]
    public void DecodeOverInterleavedBlocks_Gathers()
    {
        using var scope = NewDisposeScope();
        using var pool = Pool();
        var a = pool.NewSequence();
        var b = pool.NewSequence();
        for (int blocks = 1; blocks <= 3; blocks++)
        {
            Assert.True(pool.TryReserve(a, 4 * blocks));
            Assert.True(pool.TryReserve(b, 4 * blocks));
        }
        a.Length = 9;
        Assert.Null(a.ContiguousStart);
        var plan = DecodePlan(a);
        Assert.Null(plan.DecodeMask);
        Assert.Equal(Enumerable.Range(0, 10).Select(p => a.Slot(p)).ToArray(), plan.DecodeSlots!.data<long>().ToArray());
    }

    [Fact]
    public void EqualDecodesThroughWindows_MatchEachSequenceAloneThroughGathers()
    {
        using var fx = new Fixture(Fixture.Small);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        int n = ckpt.Config.NumLayers, vocab = ckpt.Config.VocabSize;
        using var model = StageModel.Load(ckpt, 0, n);
        using var pool = model.NewBlockPool(64, blockSize: 4);
        const int count = 4, prompt = 8, steps = 6;
        var seqs = Enumerable.Range(0, count).Select(_ => pool.NewSequence()).ToArray();
        foreach (var s in seqs) Assert.True(pool.TryReserve(s, prompt + steps)); // consecutive blocks, one stride apart
        var alone = seqs.Select(_ => new StageSession(model, fragmented: true)).ToArray();
        try
        {
            var next = Enumerable.Range(0, count)
                .Select(i => Enumerable.Range(0, prompt).Select(j => (long)((i * 31 + j * 7 + 1) % vocab)).ToArray()).ToArray();
            double worst = 0;
            for (int step = 0; step <= steps; step++)
            {
                using var scope = NewDisposeScope();
                var inputs = next.Select(ids => tensor(ids, ScalarType.Int64)).ToArray();
                if (step > 0) Assert.All(seqs, s => Assert.NotNull(s.ContiguousStart)); // the condition for strided windows
                var batched = model.ForwardBatch(seqs.Select((s, i) => new BatchItem(inputs[i], s)).ToList(), pool, 0, n);
                for (int i = 0; i < count; i++)
                {
                    var single = alone[i].Forward(inputs[i]);
                    worst = Math.Max(worst, (single - batched[i]!).abs().max().item<float>());
                    next[i] = [batched[i]!.argmax(-1).item<long>()];
                }
            }
            Assert.All(alone, a => Assert.True(a.IsGathered));
            Assert.True(worst < 1e-4, $"strided-window decodes differ from gathered ones by {worst:g3}");
        }
        finally
        {
            foreach (var a in alone) a.Dispose();
        }
    }

    [Fact]
    public void AllPositionsBesideLastPositionAndNoLogits_EachItemGetsItsOwnRows()
    {
        using var fx = new Fixture(Fixture.Small);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        using var model = StageModel.Load(ckpt, 0, ckpt.Config.NumLayers);
        using var pool = model.NewBlockPool(64, blockSize: 4);
        using var scope = NewDisposeScope();
        var prompts = Enumerable.Range(0, 3).Select(p => fx.Ref($"prompt.{p}")).ToArray();
        var seqs = prompts.Select(p => { var s = pool.NewSequence(); Assert.True(pool.TryReserve(s, (int)p.shape[0])); return s; }).ToArray();
        var logits = model.ForwardBatch([
            new BatchItem(prompts[0], seqs[0], AllPositions: true),
            new BatchItem(prompts[1], seqs[1]),
            new BatchItem(prompts[2], seqs[2], WantLogits: false)], pool, 0, ckpt.Config.NumLayers);
        var all = fx.Ref("logits.0");
        Assert.Equal(all.shape, logits[0]!.shape);
        Assert.True((logits[0]! - all).abs().max().item<float>() <= fx.LogitTolerance);
        var last = fx.Ref("logits.1")[-1];
        Assert.Equal(last.shape, logits[1]!.shape);
        Assert.True((logits[1]! - last).abs().max().item<float>() <= fx.LogitTolerance);
        Assert.Null(logits[2]);
        Assert.Equal(prompts.Select(p => (int)p.shape[0]), seqs.Select(s => s.Length));
    }
}
