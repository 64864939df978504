using Swarm.Checkpoints;
using Swarm.Model;
using Swarm.Tests.Model;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Swarm.Tests.Engine;

/// <summary>
/// The managed decode step (<see cref="StageModel.ManagedDecodeEnabled"/>) against the libtorch path of the same stage,
/// teacher-forced on the same tokens over the same prefilled KV: parallel and sequential residual, partial and full
/// rotary, f32/bf16/int8 weights, fragmented KV blocks, a batch of sequences at different lengths, middle and last stages.
/// </summary>
public class ManagedDecodeTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "swarm-managed-decode-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, true);
    }

    /// <summary>Head dims of 16 (the per-position loop) and 80 (two 32-dim register blocks, then that loop for the rest).</summary>
    public static TheoryData<bool, double, WeightFormat, int> Cases() => new()
    {
        { true, 0.25, WeightFormat.F32, 16 }, { false, 1.0, WeightFormat.F32, 16 },
        { true, 0.5, WeightFormat.BF16, 16 }, { false, 0.25, WeightFormat.Int8, 16 },
        { true, 0.25, WeightFormat.F32, 80 }, { true, 0.25, WeightFormat.BF16, 80 },
    };

    /// <summary>
    /// Teacher-forced decode, managed vs libtorch over the same prefilled KV. With f32 weights the two agree to float
    /// rounding. With half or int8 weights (bf16 activations) the libtorch path rounds every activation to bf16 while the
    /// managed one keeps f32, so they differ by bf16 steps; both are then measured against an f32 model of the same
    /// checkpoint (stored in bf16, so its weights are exactly the bf16 ones) and the managed path must be as close to it.
    /// </summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void Decode_MatchesLibtorchPath(bool parallel, double rotaryPct, WeightFormat weights, int headDim)
    {
        var spec = new NeoXSpec(4 * headDim, 4, 3, 97, rotaryPct, 10000, parallel, 1e-5, ScalarType.BFloat16, false);
        RandomCheckpoint.Write(spec, _dir, seed: 7);
        using var ckpt = Checkpoint.Open(_dir);
        using var model = StageModel.Load(ckpt, 0, spec.Layers, weights);
        using var reference = StageModel.Load(ckpt, 0, spec.Layers, WeightFormat.F32);
        reference.ManagedDecodeEnabled = false;
        long[] prompt = [5, 17, 3, 88, 41];
        using var managed = new StageSession(model, fragmented: true);
        using var torchPath = new StageSession(model, fragmented: true);
        using var exact = new StageSession(reference);
        using var scope = NewDisposeScope();
        managed.Forward(tensor(prompt));
        torchPath.Forward(tensor(prompt));
        var next = exact.Forward(tensor(prompt)).argmax().item<long>();
        double between = 0, managedError = 0, torchError = 0;
        for (int step = 0; step < 20; step++)
        {
            model.ManagedDecodeEnabled = true;
            var a = managed.Forward(tensor(new[] { next }));
            model.ManagedDecodeEnabled = false;
            var b = torchPath.Forward(tensor(new[] { next }));
            var c = exact.Forward(tensor(new[] { next }));
            between = Math.Max(between, RelativeDifference(a, b));
            managedError = Math.Max(managedError, RelativeDifference(a, c));
            torchError = Math.Max(torchError, RelativeDifference(b, c));
            next = c.argmax().item<long>();
        }
        model.ManagedDecodeEnabled = true;
        output.WriteLine($"{weights}, parallel={parallel}, rotary={rotaryPct}, head dim {headDim}: max |Δlogit| / max|logit|: managed vs libtorch {between:E2}; " +
                         $"vs f32 model: managed {managedError:E2}, libtorch {torchError:E2}");
        Assert.Equal(managed.Length, torchPath.Length);
        if (weights == WeightFormat.F32) Assert.True(between <= 2e-5, $"managed decode differs from the libtorch path by {between:E2}");
        else Assert.True(managedError <= 1.1 * torchError + 1e-3,
            $"managed decode is further from the f32 model ({managedError:E2}) than the libtorch path ({torchError:E2})");
    }

    [Fact]
    public void Decode_BatchOfSequencesAtDifferentLengths_MatchesEachAloneOnLibtorch_OnMiddleAndLastStage()
    {
        var spec = new NeoXSpec(64, 4, 4, 97, 0.25, 10000, true, 1e-5, ScalarType.Float32, false);
        RandomCheckpoint.Write(spec, _dir, seed: 11);
        using var ckpt = Checkpoint.Open(_dir);
        using var first = StageModel.Load(ckpt, 0, 2, WeightFormat.F32);
        using var last = StageModel.Load(ckpt, 2, 4, WeightFormat.F32);
        using var scope = NewDisposeScope();
        long[][] prompts = [[1, 2, 3], [9, 8, 7, 6, 5, 4, 3], [42]];
        // Reference: every sequence alone through the libtorch path of both stages.
        first.ManagedDecodeEnabled = last.ManagedDecodeEnabled = false;
        var expected = prompts.Select(p =>
        {
            using var s1 = new StageSession(first);
            using var s2 = new StageSession(last);
            s2.Forward(s1.Forward(tensor(p)));
            return s2.Forward(s1.Forward(tensor(new long[] { 13 }))).clone();
        }).ToArray();

        // The same three sequences decoding together in one managed step, their KV blocks interleaved in shared pools.
        first.ManagedDecodeEnabled = last.ManagedDecodeEnabled = true;
        using var pool1 = first.NewBlockPool(64, 2);
        using var pool2 = last.NewBlockPool(64, 2);
        var seqs = prompts.Select(_ => (pool1.NewSequence(), pool2.NewSequence())).ToArray();
        for (int i = 0; i < prompts.Length; i++)
        {
            Assert.True(pool1.TryReserve(seqs[i].Item1, prompts[i].Length + 1) && pool2.TryReserve(seqs[i].Item2, prompts[i].Length + 1));
            var h = first.ForwardBatch([new BatchItem(tensor(prompts[i]), seqs[i].Item1)], pool1, 0, 2)[0]!;
            last.ForwardBatch([new BatchItem(h, seqs[i].Item2)], pool2, 2, 4);
        }
        var hidden = first.ForwardBatch(seqs.Select(s => new BatchItem(tensor(new long[] { 13 }), s.Item1)).ToList(), pool1, 0, 2);
        var logits = last.ForwardBatch(seqs.Select((s, i) => new BatchItem(hidden[i]!, s.Item2)).ToList(), pool2, 2, 4);
        for (int i = 0; i < prompts.Length; i++)
        {
            double d = RelativeDifference(logits[i]!, expected[i]);
            output.WriteLine($"sequence {i}: {d:E2}");
            Assert.True(d <= 2e-5, $"sequence {i} differs by {d:E2}");
            Assert.Equal(prompts[i].Length + 1, seqs[i].Item2.Length);
        }
    }

    /// <summary>
    /// A batch large enough that attention is split by sequence (all heads of a sequence read row by row) gives every
    /// sequence what decoding it alone gives (attention split by (sequence, head), the products by the single-row kernel),
    /// to float rounding. Head dims of 16 and 80 take the attention's per-position tail; 64 does not.
    /// </summary>
    [Theory]
    [InlineData(16, WeightFormat.F32)]
    [InlineData(64, WeightFormat.F32)]
    [InlineData(80, WeightFormat.F32)]
    [InlineData(64, WeightFormat.BF16)]
    public void Decode_AttentionBySequence_GivesTheBitsOfEachSequenceAlone(int headDim, WeightFormat weights)
    {
        var spec = new NeoXSpec(4 * headDim, 4, 2, 97, 0.25, 10000, true, 1e-5, ScalarType.Float32, false);
        RandomCheckpoint.Write(spec, _dir, seed: 23);
        using var ckpt = Checkpoint.Open(_dir);
        using var model = StageModel.Load(ckpt, 0, spec.Layers, weights);
        using var scope = NewDisposeScope();
        int count = 4 * DecodeFork.Parts + 1;
        var prompts = Enumerable.Range(0, count).Select(i => Enumerable.Range(0, 1 + i % 6).Select(t => (long)((i * 31 + t * 7) % 97)).ToArray()).ToArray();
        using var pool = model.NewBlockPool(4 * count, 4);
        var alone = new Tensor[count];
        var seqs = new KvSequence[count];
        for (int i = 0; i < count; i++)
        {
            // Each sequence prefilled twice over: one copy decodes alone (attention by pair), one in the batch.
            var single = pool.NewSequence();
            seqs[i] = pool.NewSequence();
            Assert.True(pool.TryReserve(single, prompts[i].Length + 1) && pool.TryReserve(seqs[i], prompts[i].Length + 1));
            model.ForwardBatch([new BatchItem(tensor(prompts[i]), single)], pool, 0, spec.Layers);
            model.ForwardBatch([new BatchItem(tensor(prompts[i]), seqs[i])], pool, 0, spec.Layers);
            alone[i] = model.ForwardBatch([new BatchItem(tensor(new long[] { 13 }), single)], pool, 0, spec.Layers)[0]!.clone();
        }
        var together = model.ForwardBatch(seqs.Select(s => new BatchItem(tensor(new long[] { 13 }), s)).ToList(), pool, 0, spec.Layers);
        for (int i = 0; i < count; i++)
        {
            double d = RelativeDifference(together[i]!, alone[i]);
            Assert.True(d <= (weights == WeightFormat.F32 ? 2e-5 : 1e-3), $"sequence {i} differs by {d:E2}");
        }
    }

    [Fact]
    public void Decode_TokenOutsideVocabulary_IsRefusedWithoutTouchingTheSequence()
    {
        var spec = new NeoXSpec(32, 2, 1, 50, 0.25, 10000, true, 1e-5, ScalarType.Float32, false);
        RandomCheckpoint.Write(spec, _dir, seed: 3);
        using var ckpt = Checkpoint.Open(_dir);
        using var model = StageModel.Load(ckpt, 0, 1, WeightFormat.F32);
        using var session = new StageSession(model);
        using var scope = NewDisposeScope();
        session.Forward(tensor(new long[] { 1, 2 }));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => session.Forward(tensor(new long[] { 50 })));
        Assert.Contains("token id 50", e.Message);
        Assert.Equal(2, session.Length);
    }

    private static double RelativeDifference(Tensor a, Tensor b) =>
        (a - b).abs().max().item<float>() / b.abs().max().item<float>();
}
