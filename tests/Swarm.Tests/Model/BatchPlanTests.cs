using Swarm.Checkpoints;
using Swarm.Model;
using Xunit;
using static TorchSharp.torch;

namespace Swarm.Tests.Model;

/// <summary>
/// How a batched step's decodes read their keys and values: one strided view when every decode is at the same length
/// over consecutive blocks (a session alone, or equal sessions reserved up front — <c>swarm run</c> and the local bench),
/// one padded gather otherwise, and groups by length when padding would waste much; and that all give the same logits.
/// </summary>
public class BatchPlanTests
{
    private static KvBlockPool Pool() => new(layers: 1, heads: 2, headDim: 4, ScalarType.Float32, totalBlocks: 32, blockSize: 4);

    private static BatchPlan DecodePlan(params KvSequence[] seqs) => DecodePlan(long.MaxValue, seqs);

    private static BatchPlan DecodePlan(long maxPadding, params KvSequence[] seqs)
    {
        var items = seqs.Select(s => new BatchItem(zeros(1, ScalarType.Int64), s)).ToList();
        return BatchPlan.Build(items, seqs.Select(_ => 1).ToArray(), Enumerable.Range(0, seqs.Length).ToArray(), seqs.Length, maxPadding);
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
        var g = Assert.Single(DecodePlan(seqs).DecodeGroups);
        Assert.Null(g.Slots);
        Assert.Null(g.Mask);
        Assert.Equal(seqs[0].Slot(0), g.Start);
        Assert.Equal(12, g.Stride);
        Assert.Equal(10, g.Length);
        Assert.Equal(seqs[2].Slot(0), g.Start + 2 * g.Stride);
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
        var g = Assert.Single(DecodePlan(a, b).DecodeGroups); // 4 positions of padding: not worth a second group here
        Assert.Equal(10, g.Length);
        Assert.Equal([0L, 1L], g.Rows.data<long>().ToArray());
        Assert.Equal(b.Slot(5), g.Slots![10 + 5].item<long>());
        Assert.Equal(b.Slot(0), g.Slots[10 + 6].item<long>());   // padding reads the sequence's own position 0 …
        Assert.False(g.Mask![1, 0, 0, 6].item<bool>());            // … and is masked out
        Assert.True(g.Mask[0, 0, 0, 9].item<bool>());
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
        var g = Assert.Single(DecodePlan(a).DecodeGroups);
        Assert.Null(g.Mask);
        Assert.Equal(Enumerable.Range(0, 10).Select(p => a.Slot(p)).ToArray(), g.Slots!.data<long>().ToArray());
    }

    [Fact]
    public void DecodesOfFarApartLengths_AttendInGroupsByLength_EachPaddedOnlyToItsOwnLongest()
    {
        using var scope = NewDisposeScope();
        using var pool = Pool();
        var lengths = new[] { 30, 2, 28, 3, 29 }; // batch rows 0 … 4
        var seqs = lengths.Select(l => { var s = pool.NewSequence(); Assert.True(pool.TryReserve(s, l + 1)); s.Length = l; return s; }).ToArray();
        // Joining the long ones to {2, 3} would pad two decodes by 25 positions each; 8 is the most allowed.
        var groups = DecodePlan(8, seqs).DecodeGroups;
        Assert.Equal(2, groups.Count);
        Assert.Equal([1L, 3L], groups[0].Rows.data<long>().ToArray());        // lengths 2, 3: sorted by length
        Assert.Equal(4, groups[0].Length);
        Assert.Equal([2L, 4L, 0L], groups[1].Rows.data<long>().ToArray());    // lengths 28, 29, 30
        Assert.Equal(31, groups[1].Length);
        Assert.Equal(seqs[2].Slot(28), groups[1].Slots![28].item<long>());   // the first decode's own last position
        var mask = groups[1].Mask!;
        Assert.False(mask[0, 0, 0, 29].item<bool>());
        Assert.True(mask[2, 0, 0, 30].item<bool>());
        // With a large enough allowance they stay one group, in batch order.
        Assert.Equal([0L, 1L, 2L, 3L, 4L], Assert.Single(DecodePlan(1000, seqs).DecodeGroups).Rows.data<long>().ToArray());
    }

    [Fact]
    public void DecodesSplitIntoGroupsBesidePrefillChunks_MatchEachSequenceAlone()
    {
        using var fx = new Fixture(Fixture.Small);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        int n = ckpt.Config.NumLayers, vocab = ckpt.Config.VocabSize;
        using var model = StageModel.Load(ckpt, 0, n);
        model.DecodeGroupPadding = 2; // split at the smallest difference in length
        using var pool = model.NewBlockPool(128, blockSize: 4);
        // Prompts of very different lengths; sequence 4 arrives late, so for a while it prefills beside the others' decodes.
        var prompts = new[] { 3, 17, 40, 9, 25 }.Select((len, i) => Enumerable.Range(0, len).Select(j => (long)((i * 37 + j * 11 + 5) % vocab)).ToArray()).ToArray();
        var seqs = prompts.Select(_ => pool.NewSequence()).ToArray();
        var alone = prompts.Select(_ => new StageSession(model, fragmented: true)).ToArray();
        var next = new long[prompts.Length][];
        int groupsSeen = 0;
        try
        {
            double worst = 0;
            for (int step = 0; step < 8; step++)
            {
                using var scope = NewDisposeScope();
                var items = new List<BatchItem>();
                var who = new List<int>();
                for (int i = 0; i < prompts.Length; i++)
                {
                    if (i == 4 && step < 2) continue;
                    int at = seqs[i].Length;
                    long[] ids = at < prompts[i].Length ? prompts[i][at..Math.Min(prompts[i].Length, at + 12)] : next[i]!;
                    Assert.True(pool.TryReserve(seqs[i], seqs[i].Length + ids.Length));
                    items.Add(new BatchItem(tensor(ids, ScalarType.Int64), seqs[i]));
                    who.Add(i);
                }
                var rows = items.Select(it => (int)it.Input.NumberOfElements).ToArray();
                var offsets = rows.Select((_, k) => rows.Take(k).Sum()).ToArray();
                groupsSeen = Math.Max(groupsSeen, BatchPlan.Build(items, rows, offsets, rows.Sum(), model.DecodeGroupPadding).DecodeGroups.Count);
                var batched = model.ForwardBatch(items, pool, 0, n);
                for (int k = 0; k < items.Count; k++)
                {
                    int i = who[k];
                    var single = alone[i].Forward(items[k].Input);
                    worst = Math.Max(worst, (single - batched[k]!).abs().max().item<float>());
                    if (seqs[i].Length >= prompts[i].Length) next[i] = [batched[k]!.argmax(-1).item<long>()];
                }
            }
            Assert.True(groupsSeen >= 3, $"the decodes were not split by length ({groupsSeen} group(s) at most)");
            Assert.True(worst < 1e-4, $"decodes attending in length groups differ from each sequence alone by {worst:g3}");
        }
        finally
        {
            foreach (var a in alone) a.Dispose();
        }
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
