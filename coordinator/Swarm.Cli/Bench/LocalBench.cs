using System.Diagnostics;
using Swarm.Checkpoints;
using Swarm.Model;
using static TorchSharp.torch;

namespace Swarm.Cli.Bench;

/// <summary>
/// <c>swarm bench local</c>: single-process prefill and decode speed for preset models, each beside
/// its ceiling measured in the same run — memory bandwidth ÷ weight bytes per token for batch-1 decode,
/// a plain f32 matmul of the model's width for prefill.
/// </summary>
internal static class LocalBench
{
    public sealed record Variant(string Preset, string Dtype, double Prefill128, double Prefill512, double PrefillGflops512,
        double Decode1, double Decode1Libtorch, double Decode8, double WeightMBPerToken, double Roofline, double Fraction);

    /// <param name="MemoryBandwidthGBps">The roofline's bandwidth: <see cref="Roofline.MeasureStreamingReadGBps"/>.</param>
    /// <param name="LibtorchSumBandwidthGBps">libtorch's <c>sum</c> over the same size, the roofline's bandwidth before (for comparison).</param>
    public sealed record Report(double MemoryBandwidthGBps, double LibtorchSumBandwidthGBps, double MatmulGflopsF32, double MatmulGflopsBf16, List<Variant> Variants);

    public static Report Run(IReadOnlyList<string> presets, IReadOnlyList<WeightFormat> formats, Action<string> log)
    {
        log("measuring memory bandwidth and matmul throughput…");
        double bw = Roofline.MeasureStreamingReadGBps(), torchBw = Roofline.MeasureReadBandwidthGBps();
        var variants = new List<Variant>();
        double mmF32 = 0, mmBf16 = 0;
        foreach (var preset in presets)
        {
            var cfg = Presets.Get(preset);
            if (mmF32 == 0)
            {
                mmF32 = Roofline.MeasureMatmulGflops(512, cfg.HiddenSize, 4 * cfg.HiddenSize, ScalarType.Float32);
                mmBf16 = Roofline.MeasureMatmulGflops(512, cfg.HiddenSize, 4 * cfg.HiddenSize, ScalarType.BFloat16);
            }
            foreach (var format in formats)
            {
                // Half formats load from a checkpoint of their own dtype; int8 is quantized at load from the f32 one.
                var stored = format switch { WeightFormat.BF16 => ScalarType.BFloat16, WeightFormat.F16 => ScalarType.Float16, _ => ScalarType.Float32 };
                string dir = PresetCache.Ensure(preset, stored, 1, new ConsoleProgress($"creating {preset}"));
                using var ckpt = Checkpoint.Open(dir);
                using var model = StageModel.Load(ckpt, 0, cfg.NumLayers, format);
                string dt = format.Name();
                log($"{preset} {dt}: prefill…");
                double p128 = Prefill(model, 128, out _), p512 = Prefill(model, 512, out double secs512);
                double flops512 = PrefillFlops(cfg, 512);
                log($"{preset} {dt}: decode…");
                int steps = preset == "pythia-410m" ? 12 : 24;
                double d1 = Decode(model, 1, steps);
                model.ManagedDecodeEnabled = false; // the same decode through libtorch's ops: the managed step's gain, same run
                double d1Torch = Decode(model, 1, steps);
                model.ManagedDecodeEnabled = true;
                double d8 = Decode(model, 8, 16);
                double mb = model.WeightBytesReadPerToken / 1e6;
                double roof = bw * 1e9 / model.WeightBytesReadPerToken;
                variants.Add(new Variant(preset, dt, p128, p512, flops512 / secs512 / 1e9, d1, d1Torch, d8, mb, roof, d1 / roof));
            }
        }
        return new Report(bw, torchBw, mmF32, mmBf16, variants);
    }

    public sealed record TpFigure(int Shards, double Prefill128, double Decode1, double DecodeMsPerToken, double ShardWeightMB);

    /// <summary>
    /// Tensor-parallel comparison: the same model (f32, all shards on the CPU) unsplit and split into 2, 4, … ≤
    /// <paramref name="maxShards"/> shards (counts the heads or intermediate size do not allow are reported and skipped).
    /// </summary>
    public static List<TpFigure> RunTensorParallel(string preset, int maxShards, Action<string> log)
    {
        var cfg = Presets.Get(preset);
        string dir = PresetCache.Ensure(preset, ScalarType.Float32, 1, new ConsoleProgress($"creating {preset}"));
        using var ckpt = Checkpoint.Open(dir);
        var figures = new List<TpFigure>();
        for (int n = 1; n <= maxShards; n *= 2)
        {
            var tp = TensorParallelOptions.Cpu(n);
            try { tp.Validate(cfg); }
            catch (ArgumentException e) { log($"skipping tp {n}: {e.Message}"); continue; }
            using var model = StageModel.Load(ckpt, 0, cfg.NumLayers, ScalarType.Float32, tensorParallel: n == 1 ? null : tp);
            log($"{preset} tp {n}: prefill and decode…");
            double p128 = Prefill(model, 128, out _);
            double d1 = Decode(model, 1, 32);
            double shardMB = n == 1 ? model.LayerWeightBytes / 1e6 : model.Layers.Sum(l => l.ShardWeightBytes(0)) / 1e6;
            figures.Add(new TpFigure(n, p128, d1, 1000 / d1, shardMB));
        }
        return figures;
    }

    /// <summary>Matmul FLOPs of a prefill of t tokens: weights (12·H² per layer) + attention (causal, 2·t²·H per layer).</summary>
    public static double PrefillFlops(ModelConfig c, int t) =>
        2.0 * t * c.NumLayers * (3.0 * c.HiddenSize * c.HiddenSize + c.HiddenSize * c.HiddenSize + 2.0 * c.HiddenSize * c.IntermediateSize)
        + 2.0 * c.NumLayers * (double)t * t * c.HiddenSize // QKᵀ and PV over the causal half
        + 2.0 * c.HiddenSize * c.VocabSize;                 // logits of the last position

    private static double Prefill(StageModel model, int t, out double seconds)
    {
        using var scope = NewDisposeScope();
        var ids = randint(0, model.Config.VocabSize, [t], dtype: ScalarType.Int64);
        Run(model, ids.narrow(0, 0, Math.Min(t, 64)));
        double best = double.MaxValue;
        for (int rep = 0; rep < 3; rep++)
        {
            using var pool = NewPool(model, 1, t, out var seqs);
            var sw = Stopwatch.StartNew();
            using var logits = model.ForwardBatch([new BatchItem(ids, seqs[0])], pool, model.Start, model.End)[0];
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        seconds = best;
        return t / best;
    }

    /// <summary>One untimed prefill (warm-up) in a pool of its own.</summary>
    private static void Run(StageModel model, Tensor ids)
    {
        using var pool = NewPool(model, 1, (int)ids.NumberOfElements, out var seqs);
        using var logits = model.ForwardBatch([new BatchItem(ids, seqs[0])], pool, model.Start, model.End)[0];
    }

    /// <summary>A pool with <paramref name="count"/> sequences, each reserved for <paramref name="tokens"/> positions up front.</summary>
    private static KvBlockPool NewPool(StageModel model, int count, int tokens, out KvSequence[] sequences)
    {
        int perSequence = (tokens + KvBlockPool.DefaultBlockSize - 1) / KvBlockPool.DefaultBlockSize;
        var pool = model.NewBlockPool(count * perSequence);
        sequences = new KvSequence[count];
        for (int i = 0; i < count; i++)
        {
            sequences[i] = pool.NewSequence();
            if (!pool.TryReserve(sequences[i], tokens)) throw new InvalidOperationException("the bench's KV pool is too small");
        }
        return pool;
    }

    /// <summary>Decode tokens/s of <paramref name="batch"/> sessions stepping together: the best of three timed runs of
    /// <paramref name="steps"/> steps (the machines are noisy; prefill is reported the same way).</summary>
    private static double Decode(StageModel model, int batch, int steps)
    {
        using var scope = NewDisposeScope();
        using var pool = NewPool(model, batch, 64 + 3 * steps + 8, out var seqs);
        var next = new Tensor[batch];
        using (var prompt = NewDisposeScope())
        {
            var items = seqs.Select(s => new BatchItem(randint(0, model.Config.VocabSize, [32], dtype: ScalarType.Int64), s)).ToList();
            var logits = model.ForwardBatch(items, pool, model.Start, model.End);
            for (int b = 0; b < batch; b++) next[b] = logits[b]!.argmax(-1, keepdim: true).MoveToOuterDisposeScope();
        }
        void Step()
        {
            using var s = NewDisposeScope();
            var logits = model.ForwardBatch(seqs.Select((q, b) => new BatchItem(next[b], q)).ToList(), pool, model.Start, model.End);
            for (int b = 0; b < batch; b++)
            {
                next[b].Dispose();
                next[b] = logits[b]!.argmax(-1, keepdim: true).MoveToOuterDisposeScope();
            }
        }
        for (int i = 0; i < 4; i++) Step();
        double best = 0;
        for (int run = 0; run < 3; run++)
        {
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < steps; i++) Step();
            next[0].item<long>();
            best = Math.Max(best, batch * steps / sw.Elapsed.TotalSeconds);
        }
        return best;
    }
}
