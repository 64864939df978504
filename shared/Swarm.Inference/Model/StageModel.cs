using Swarm.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Swarm.Model;

/// <summary>
/// A pipeline stage: GPT-NeoX layers [Start, End). The first stage also embeds token ids; the last
/// also applies the final LayerNorm and the unembedding. Loads only its own tensors from the checkpoint.
/// Every step — one session or many, prefill or decode, split across shards or not — runs through
/// <see cref="ForwardBatch"/> over a paged <see cref="KvBlockPool"/>.
/// </summary>
public sealed class StageModel : IDisposable
{
    private readonly IReadOnlyList<Device> _devices; // one per shard
    private readonly NeoXLayer[] _layers;
    private readonly Rotary[] _ropes;          // one per shard, on its device (shards on one device share a table)
    private readonly ShardWorkers? _workers;   // tensor parallelism: one thread per shard
    private readonly Tensor? _embedIn, _finalW, _finalB;
    private readonly LinearWeights? _embedOut;
    private readonly long[] _normShape;
    private readonly ManagedDecode? _managedDecode;

    public ModelConfig Config { get; }
    public int Start { get; }
    public int End { get; }
    /// <summary>Dtype of activations, the embedding and the KV cache (<see cref="WeightFormatDtypes.ComputeDtype"/> of <see cref="Weights"/>).</summary>
    public ScalarType ComputeDtype { get; }
    /// <summary>How the layers' and the head's matrices are stored.</summary>
    public WeightFormat Weights { get; }
    public bool IsFirst => Start == 0;
    public bool IsLast => End == Config.NumLayers;
    public int LayerCount => End - Start;
    /// <summary>Longest sequence a session may reach (max_position_embeddings).</summary>
    public int MaxTokens => Config.MaxPositionEmbeddings;
    /// <summary>Tensor-parallel settings, or null when the layers are not split.</summary>
    public TensorParallelOptions? TensorParallel { get; }
    /// <summary>Device of the embedding, the head and the all-reduce (the first shard's device; the CPU without TP).</summary>
    public Device HomeDevice { get; }

    private StageModel(ModelConfig c, int start, int end, WeightFormat weights, IReadOnlyList<Device> devices, NeoXLayer[] layers, Rotary[] ropes, ShardWorkers? workers,
        Tensor? embedIn, Tensor? finalW, Tensor? finalB, LinearWeights? embedOut, TensorParallelOptions? tp)
    {
        Config = c; Start = start; End = end; Weights = weights; ComputeDtype = weights.ComputeDtype(); _devices = devices; _layers = layers; _ropes = ropes; _workers = workers;
        _embedIn = embedIn; _finalW = finalW; _finalB = finalB; _embedOut = embedOut;
        _normShape = [c.HiddenSize];
        TensorParallel = tp;
        HomeDevice = devices[0];
        _managedDecode = ManagedDecode.TryCreate(c, start, layers, ropes[0], embedIn, finalW, finalB, embedOut, ComputeDtype);
        DecodeGroupPadding = Math.Max(KvBlockPool.DefaultBlockSize, DecodeGroupPaddingBytes / KvBlockPool.BytesPerTokenPerLayer(c, ComputeDtype));
    }

    /// <summary>Keys and values of one layer that padding may waste before decodes are split into groups (256 KiB).</summary>
    /// <remarks>
    /// A decode position costs its keys and values three times per layer (gathered: read and written; attended: read again),
    /// about a microsecond per 6 KiB position at the ~20 GB/s of a volunteer's CPU; a separate group costs a few small ops
    /// per layer (tens of µs). 256 KiB of padding (42 positions of pythia-160m in f32) is where splitting starts to pay.
    /// </remarks>
    public const long DecodeGroupPaddingBytes = 256 * 1024;

    /// <summary>
    /// Padding, in positions summed over a group, beyond which a batch's decodes of different lengths attend in separate
    /// groups rather than one padded to the longest (default: <see cref="DecodeGroupPaddingBytes"/> of this stage's keys and
    /// values, at least one block). Results do not depend on it, only the work.
    /// </summary>
    public long DecodeGroupPadding { get; set; }

    /// <summary>
    /// Decode steps of up to <see cref="ManagedDecode.MaxRows"/> sequences (one new position each) run in managed kernels over
    /// the same weights and KV pool (default, on CPUs with AVX2/FMA, unsplit layers); false sends them through libtorch like
    /// every other step (for comparisons).
    /// </summary>
    public bool ManagedDecodeEnabled { get; set; } = true;

    /// <summary>Live-tensor counts of the shard threads (empty without TP); see <see cref="ShardWorkers.LiveTensorCounts"/>.</summary>
    public long[] ShardLiveTensorCounts => _workers?.LiveTensorCounts ?? [];

    /// <summary>The layers of this stage, [Start, End) (each split into <see cref="NeoXLayer.Shards"/> shards).</summary>
    public IReadOnlyList<NeoXLayer> Layers => _layers;

    /// <summary>Loads layers [start, end) with weights stored in <paramref name="dtype"/> (f32 default, bf16 or f16).</summary>
    /// <param name="parallelism">Threads that split a batch-1 GEMV (default: all cores).</param>
    /// <param name="tensorParallel">
    /// Splits every layer across shards on their devices (null or one CPU shard: the ordinary single-device layer).
    /// </param>
    public static StageModel Load(Checkpoint ckpt, int start, int end, ScalarType dtype = ScalarType.Float32,
        IProgress<(long Done, long Total)>? progress = null, int parallelism = 0, TensorParallelOptions? tensorParallel = null)
    {
        if (dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
            throw new ArgumentException($"unsupported weight dtype {dtype}");
        return Load(ckpt, start, end, WeightFormatDtypes.FromDtype(dtype), progress, parallelism, tensorParallel);
    }

    /// <summary>Loads layers [start, end) with the matrices of the layers and the head stored in <paramref name="weights"/>.</summary>
    /// <param name="parallelism">Threads that split a batch-1 GEMV (default: all cores).</param>
    /// <param name="tensorParallel">
    /// Splits every layer across shards on their devices (null or one CPU shard: the ordinary single-device layer).
    /// </param>
    public static StageModel Load(Checkpoint ckpt, int start, int end, WeightFormat weights,
        IProgress<(long Done, long Total)>? progress = null, int parallelism = 0, TensorParallelOptions? tensorParallel = null)
    {
        var c = ckpt.Config;
        if (start < 0 || end > c.NumLayers || start > end || (start == end && start != 0 && end != c.NumLayers))
            throw new ArgumentException($"invalid layer range [{start}, {end}) for a model of {c.NumLayers} layers");
        var dtype = weights.ComputeDtype();
        if (parallelism <= 0) parallelism = ComputePool.Shared.Workers + 1;
        var tp = tensorParallel is { Shards: 1 } one && one.Devices[0].type == DeviceType.CPU ? null : tensorParallel;
        tp?.Validate(c);
        IReadOnlyList<Device> devices = tp?.Devices ?? [CPU];
        var home = devices[0];
        var owned = new List<IDisposable>();
        try
        {
            long h = c.HiddenSize, v = c.VocabSize;
            Tensor? embedIn = null, finalW = null, finalB = null;
            LinearWeights? embedOut = null;
            // Progress in bytes read from the checkpoint (what a terminal progress bar shows).
            long total = StageTensorNames(c, start, end).Sum(n => ckpt.Has(n) ? ckpt.Entry(n).End - ckpt.Entry(n).Begin : 0);
            long baseline = ckpt.BytesRead;
            long Done() => ckpt.BytesRead - baseline;
            if (start == 0)
            {
                embedIn = ckpt.Read("gpt_neox.embed_in.weight", [v, h], dtype).to(home, disposeAfter: true).DetachFromDisposeScope();
                owned.Add(embedIn);
                progress?.Report((Done(), total));
            }
            ShardWorkers? workers = null;
            if (devices.Count > 1)
            {
                // Each shard's thread gets an equal share of this process's intra-op threads (at least one).
                workers = new ShardWorkers(devices.Count, Math.Max(1, parallelism / devices.Count));
                owned.Add(workers);
            }
            var layers = new NeoXLayer[end - start];
            for (int i = start; i < end; i++)
            {
                layers[i - start] = new NeoXLayer(ckpt, i, weights, devices, parallelism, workers);
                owned.Add(layers[i - start]);
                progress?.Report((Done(), total));
            }
            if (end == c.NumLayers)
            {
                finalW = ckpt.Read("gpt_neox.final_layer_norm.weight", [h], dtype).to(home, disposeAfter: true).DetachFromDisposeScope(); owned.Add(finalW);
                finalB = ckpt.Read("gpt_neox.final_layer_norm.bias", [h], dtype).to(home, disposeAfter: true).DetachFromDisposeScope(); owned.Add(finalB);
                embedOut = LinearWeights.Create(ckpt.Read("embed_out.weight", [v, h], weights.ReadDtype()).to(home, disposeAfter: true), null, weights, parallelism);
                owned.Add(embedOut);
                progress?.Report((Done(), total));
            }
            var ropes = new Rotary[devices.Count];
            for (int s = 0; s < devices.Count; s++)
            {
                int same = Enumerable.Range(0, s).FirstOrDefault(j => devices[j].type == devices[s].type && devices[j].index == devices[s].index, -1);
                if (same >= 0) { ropes[s] = ropes[same]; continue; }
                ropes[s] = new Rotary(c, c.MaxPositionEmbeddings, dtype, devices[s]);
                owned.Add(ropes[s]);
            }
            return new StageModel(c, start, end, weights, devices, layers, ropes, workers, embedIn, finalW, finalB, embedOut, tp);
        }
        catch
        {
            foreach (var d in owned) d.Dispose();
            throw;
        }
    }

    /// <summary>Names of the checkpoint tensors layers [start, end) of a stage read.</summary>
    public static IEnumerable<string> StageTensorNames(ModelConfig c, int start, int end) => NeoXTensorNames.ForStage(c, start, end);

    /// <summary>Bytes of weights this stage holds.</summary>
    public long WeightBytes => LayerWeightBytes + (_embedOut?.Bytes ?? 0)
        + new[] { _embedIn, _finalW, _finalB }.Where(t => t is not null).Sum(t => t!.NumberOfElements * t.ElementSize);

    /// <summary>Bytes of the transformer layers' weights (all shards; no embedding or head).</summary>
    public long LayerWeightBytes => _layers.Sum(l => l.WeightBytes);

    /// <summary>Bytes of weights read to produce one token at batch 1 (the embedding reads one row).</summary>
    public long WeightBytesReadPerToken => WeightBytes - (_embedIn is null ? 0 : _embedIn.NumberOfElements * _embedIn.ElementSize);

    /// <summary>KV bytes one token costs on this stage.</summary>
    public long KvBytesPerToken => KvBlockPool.BytesPerTokenPerLayer(Config, ComputeDtype) * LayerCount;

    /// <summary>A KV block pool for this stage's layers holding <paramref name="totalBlocks"/> blocks (sharded like the layers).</summary>
    public KvBlockPool NewBlockPool(int totalBlocks, int blockSize = KvBlockPool.DefaultBlockSize) =>
        new(LayerCount, Config.NumHeads, Config.HeadDim, ComputeDtype, totalBlocks, blockSize, TensorParallel?.Devices);

    /// <summary>Token ids [B, T] (int64) → embeddings [B, T, H]. First stage only.</summary>
    /// <remarks>
    /// Ids are not range-checked here (that would cost device syncs on every first-stage step): they are validated
    /// once where they enter a process, on CPU data — the coordinator's request parser, and the <c>StageHost</c> a node and
    /// <c>swarm run</c> submit steps to.
    /// </remarks>
    public Tensor Embed(Tensor ids)
    {
        if (_embedIn is null) throw new InvalidOperationException("only the first stage embeds tokens");
        using var scope = NewDisposeScope();
        long b = ids.shape[0], t = ids.shape[1];
        using var flat = ids.reshape(-1).to(HomeDevice);
        return _embedIn.index_select(0, flat).view(b, t, Config.HiddenSize).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Runs layers [<paramref name="from"/>, <paramref name="to"/>) on one step of each of several sequences at
    /// once (continuous batching): the rows of all items go through every dense op together, so each weight is
    /// read once per call; attention is per sequence against its own cached positions (decodes of similar lengths in one call),
    /// so results do not depend on what else is in the batch. Sequences may be at different lengths and bring any number of new positions
    /// (decode: 1, prefill chunk: many). Embeds when <paramref name="from"/> is 0 and applies the head when
    /// <paramref name="to"/> is the model's last layer; a sequence must use the same sub-range on every step.
    /// Each item's <see cref="BatchItem.Kv"/> must hold blocks for its new positions
    /// (<see cref="KvBlockPool.TryReserve"/>) and advances by them.
    /// Returns per item: on the last stage f32 logits — [V] of its last position, [t, V] with
    /// <see cref="BatchItem.AllPositions"/>, null when it wants none — otherwise hidden states [t, H] in the compute
    /// dtype. Results are on the CPU; the caller owns them; inputs are not disposed.
    /// </summary>
    public Tensor?[] ForwardBatch(IReadOnlyList<BatchItem> items, KvBlockPool pool, int from, int to)
    {
        var results = ForwardBatchCapturing(items, pool, from, to, out var captured);
        foreach (var c in captured.SelectMany(c => c)) c.Hidden.Dispose();
        return results;
    }

    /// <summary>
    /// <see cref="ForwardBatch"/>, also returning per item the outputs of
    /// the layers in its <see cref="BatchItem.CaptureLayers"/> that lie in [<paramref name="from"/>, <paramref name="to"/>),
    /// in layer order (f32 on the CPU; the caller owns them).
    /// </summary>
    public Tensor?[] ForwardBatchCapturing(IReadOnlyList<BatchItem> items, KvBlockPool pool, int from, int to, out CapturedLayer[][] captured)
    {
        var (rows, offsets, total) = Measure(items, pool, from, to);
        var captures = items.Select(_ => new List<CapturedLayer>()).ToArray();
        captured = [.. captures.Select(c => Array.Empty<CapturedLayer>())];
        if (items.Count == 0) return [];
        if (ManagedDecodeEnabled && _managedDecode is not null && ManagedDecode.Takes(items, rows, to == Config.NumLayers))
        {
            using var step = NewDisposeScope();
            var decoded = _managedDecode.Run(items, pool, from, to);
            foreach (var t in decoded) t?.MoveToOuterDisposeScope();
            return decoded;
        }
        using var scope = NewDisposeScope();
        using var _ = inference_mode();
        Tensor x;
        if (from == 0)
        {
            var ids = cat(items.Select(it => it.Input.reshape(-1)).ToArray(), 0);
            x = Embed(ids.unsqueeze(0)).squeeze(0);
        }
        else x = cat(items.Select(it => it.Input.reshape(-1, Config.HiddenSize).to_type(ComputeDtype)).ToArray(), 0).to(HomeDevice);

        var plan = BatchPlan.Build(items, rows, offsets, total, DecodeGroupPadding);
        var plans = _devices.Select(plan.On).ToArray();
        for (int i = from - Start; i < to - Start; i++)
        {
            x = _layers[i].Forward(x, _ropes, i, pool, plans);
            for (int k = 0; k < items.Count; k++)
            {
                if (items[k].CaptureLayers?.Contains(Start + i) != true) continue;
                var rowsOut = x.narrow(0, offsets[k], rows[k]).cpu().to_type(ScalarType.Float32, copy: true);
                captures[k].Add(new CapturedLayer(Start + i, rowsOut));
            }
        }
        for (int i = 0; i < items.Count; i++) items[i].Kv.Length += rows[i];
        // Moved out only now: when a layer throws, the dispose scope frees what was captured so far.
        captured = [.. captures.Select(c => c.Select(l => l with { Hidden = l.Hidden.MoveToOuterDisposeScope() }).ToArray())];

        var results = new Tensor?[items.Count];
        if (to != Config.NumLayers)
        {
            x = x.cpu(); // a no-op on the CPU
            for (int i = 0; i < items.Count; i++) results[i] = x.narrow(0, offsets[i], rows[i]).MoveToOuterDisposeScope();
            return results;
        }
        // Rows whose logits are wanted: every new position of an AllPositions item, the last of the others.
        var want = Enumerable.Range(0, items.Count).Where(i => items[i].WantLogits).ToArray();
        if (want.Length == 0) return results;
        var picked = want.SelectMany(i => items[i].AllPositions
            ? Enumerable.Range(offsets[i], rows[i]).Select(r => (long)r)
            : [(long)(offsets[i] + rows[i] - 1)]).ToArray();
        using var pick = tensor(picked, ScalarType.Int64);
        var logits = Head(x.index_select(0, pick.to(x.device))).cpu();   // [k, V]
        int at = 0;
        foreach (int i in want)
        {
            results[i] = (items[i].AllPositions ? logits.narrow(0, at, rows[i]) : logits[at]).MoveToOuterDisposeScope();
            at += items[i].AllPositions ? rows[i] : 1;
        }
        return results;
    }

    /// <summary>Checks a batch against this stage and the pool; returns each item's row count and first row.</summary>
    private (int[] Rows, int[] Offsets, int Total) Measure(IReadOnlyList<BatchItem> items, KvBlockPool pool, int from, int to)
    {
        if (from < Start || to > End || from >= to)
            throw new ArgumentOutOfRangeException(nameof(from), $"layers [{from}, {to}) are not inside this stage's [{Start}, {End})");
        if (pool.Layers != LayerCount || pool.Heads != Config.NumHeads || pool.HeadDim != Config.HeadDim || pool.Dtype != ComputeDtype
            || pool.Shards != (TensorParallel?.Shards ?? 1))
            throw new ArgumentException("the KV pool was not made for this stage", nameof(pool));
        int h = Config.HiddenSize;
        var rows = new int[items.Count];
        var offsets = new int[items.Count];
        var seen = new HashSet<KvSequence>(ReferenceEqualityComparer.Instance);
        int total = 0;
        for (int i = 0; i < items.Count; i++)
        {
            var it = items[i];
            if (!ReferenceEquals(it.Kv.Pool, pool)) throw new ArgumentException($"item {i}: its KV sequence belongs to another pool", nameof(items));
            if (!seen.Add(it.Kv)) throw new ArgumentException($"item {i}: a sequence may appear only once in a batch", nameof(items));
            long numel = it.Input.NumberOfElements;
            if (from == 0 && it.Input.dtype != ScalarType.Int64) throw new ArgumentException($"item {i}: the first layer takes int64 token ids", nameof(items));
            if (from != 0 && (it.Input.dtype == ScalarType.Int64 || it.Input.shape[^1] != h))
                throw new ArgumentException($"item {i}: expected hidden states [.., {h}], got {it.Input.dtype} [{string.Join(",", it.Input.shape)}]", nameof(items));
            int t = (int)(from == 0 ? numel : numel / h);
            if (t < 1) throw new ArgumentException($"item {i}: no positions", nameof(items));
            if (it.Kv.Length + t > MaxTokens)
                throw new InvalidOperationException($"context full: {it.Kv.Length + t} tokens exceed the limit of {MaxTokens}");
            if (it.Kv.ReservedTokens < it.Kv.Length + t)
                throw new InvalidOperationException($"item {i}: KV blocks for {it.Kv.Length + t} positions are not reserved ({it.Kv.ReservedTokens})");
            rows[i] = t; offsets[i] = total; total += t;
        }
        return (rows, offsets, total);
    }

    /// <summary>Final LayerNorm + unembedding: hidden states [.., H] → f32 logits [.., V]. Last stage only.</summary>
    public Tensor Head(Tensor hidden)
    {
        if (_embedOut is null) throw new InvalidOperationException("only the last stage has the unembedding");
        using var scope = NewDisposeScope();
        var x = F.layer_norm(hidden.to_type(ComputeDtype), _normShape, _finalW!, _finalB!, Config.LayerNormEps);
        return _embedOut.Forward(x, ScalarType.Float32).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        foreach (var l in _layers) l.Dispose();
        foreach (var r in _ropes.Distinct()) r.Dispose();
        _workers?.Dispose();
        _embedIn?.Dispose(); _finalW?.Dispose(); _finalB?.Dispose(); _embedOut?.Dispose();
    }
}
