using Swarm.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Swarm.Model;

/// <summary>
/// A pipeline stage: GPT-NeoX layers [Start, End). The first stage also embeds token ids; the last
/// also applies the final LayerNorm and the unembedding. Loads only its own tensors from the checkpoint.
/// </summary>
public sealed class StageModel : IDisposable
{
    private readonly NeoXLayer[] _layers;
    private readonly Rotary _rope;
    // Tensor parallelism (null on the ordinary path): layers split across shards, a rotary table per shard device.
    private readonly TensorParallelLayer[]? _tpLayers;
    private readonly Rotary[]? _tpRopes;
    private readonly ShardWorkers? _tpWorkers;
    private readonly Tensor? _embedIn, _finalW, _finalB;
    private readonly Dense? _embedOut;
    private readonly long[] _normShape;

    public ModelConfig Config { get; }
    public int Start { get; }
    public int End { get; }
    public ScalarType ComputeDtype { get; }
    public bool IsFirst => Start == 0;
    public bool IsLast => End == Config.NumLayers;
    public int LayerCount => End - Start;
    /// <summary>Longest sequence a session may reach (max_position_embeddings).</summary>
    public int MaxTokens => Config.MaxPositionEmbeddings;
    /// <summary>Tensor-parallel settings, or null when the layers are not split.</summary>
    public TensorParallelOptions? TensorParallel { get; }
    /// <summary>Device of the embedding, the head and the all-reduce (the first shard's device; the CPU without TP).</summary>
    public Device HomeDevice { get; }

    private StageModel(ModelConfig c, int start, int end, ScalarType dtype, NeoXLayer[] layers, Rotary rope,
        Tensor? embedIn, Tensor? finalW, Tensor? finalB, Dense? embedOut,
        TensorParallelOptions? tp = null, TensorParallelLayer[]? tpLayers = null, Rotary[]? tpRopes = null, ShardWorkers? tpWorkers = null)
    {
        Config = c; Start = start; End = end; ComputeDtype = dtype; _layers = layers; _rope = rope;
        _embedIn = embedIn; _finalW = finalW; _finalB = finalB; _embedOut = embedOut;
        _normShape = [c.HiddenSize];
        TensorParallel = tp; _tpLayers = tpLayers; _tpRopes = tpRopes; _tpWorkers = tpWorkers;
        HomeDevice = tp?.Devices[0] ?? CPU;
    }

    /// <summary>Live-tensor counts of the shard threads (empty without TP); see <see cref="ShardWorkers.LiveTensorCounts"/>.</summary>
    public long[] ShardLiveTensorCounts => _tpWorkers?.LiveTensorCounts ?? [];

    /// <summary>The tensor-parallel layers of this stage (empty without TP).</summary>
    public IReadOnlyList<TensorParallelLayer> TensorParallelLayers => _tpLayers ?? [];

    /// <summary>Loads layers [start, end) in <paramref name="dtype"/> (f32 default; bf16 where the CPU supports it).</summary>
    /// <param name="parallelism">Threads that split a batch-1 GEMV (default: all cores).</param>
    /// <param name="tensorParallel">
    /// Splits every layer across shards on their devices (null or one CPU shard: the ordinary single-device path).
    /// </param>
    public static StageModel Load(Checkpoint ckpt, int start, int end, ScalarType dtype = ScalarType.Float32,
        IProgress<(long Done, long Total)>? progress = null, int parallelism = 0, TensorParallelOptions? tensorParallel = null)
    {
        var c = ckpt.Config;
        if (start < 0 || end > c.NumLayers || start > end || (start == end && start != 0 && end != c.NumLayers))
            throw new ArgumentException($"invalid layer range [{start}, {end}) for a model of {c.NumLayers} layers");
        if (dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
            throw new ArgumentException($"unsupported compute dtype {dtype}");
        if (parallelism <= 0) parallelism = ComputePool.Shared.Workers + 1;
        var tp = tensorParallel is { Shards: 1 } one && one.Devices[0].type == DeviceType.CPU ? null : tensorParallel;
        tp?.Validate(c);
        var home = tp?.Devices[0] ?? CPU;
        var owned = new List<IDisposable>();
        try
        {
            long h = c.HiddenSize, v = c.VocabSize;
            Tensor? embedIn = null, finalW = null, finalB = null;
            Dense? embedOut = null;
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
            var layers = new NeoXLayer[tp is null ? end - start : 0];
            var tpLayers = tp is null ? null : new TensorParallelLayer[end - start];
            ShardWorkers? workers = null;
            if (tp is not null)
            {
                // Each shard's thread gets an equal share of this process's intra-op threads (at least one).
                workers = new ShardWorkers(tp.Shards, Math.Max(1, parallelism / tp.Shards));
                owned.Add(workers);
            }
            for (int i = start; i < end; i++)
            {
                if (tpLayers is not null)
                {
                    tpLayers[i - start] = new TensorParallelLayer(ckpt, i, dtype, tp!, workers!);
                    owned.Add(tpLayers[i - start]);
                }
                else
                {
                    layers[i - start] = new NeoXLayer(ckpt, i, dtype, parallelism);
                    owned.Add(layers[i - start]);
                }
                progress?.Report((Done(), total));
            }
            if (end == c.NumLayers)
            {
                finalW = ckpt.Read("gpt_neox.final_layer_norm.weight", [h], dtype).to(home, disposeAfter: true).DetachFromDisposeScope(); owned.Add(finalW);
                finalB = ckpt.Read("gpt_neox.final_layer_norm.bias", [h], dtype).to(home, disposeAfter: true).DetachFromDisposeScope(); owned.Add(finalB);
                embedOut = new Dense(ckpt.Read("embed_out.weight", [v, h], dtype).to(home, disposeAfter: true), null, parallelism); owned.Add(embedOut);
                progress?.Report((Done(), total));
            }
            var rope = new Rotary(c, c.MaxPositionEmbeddings, dtype, home);
            owned.Add(rope);
            Rotary[]? tpRopes = null;
            if (tp is not null)
            {
                tpRopes = new Rotary[tp.Shards];
                for (int s = 0; s < tp.Shards; s++) { tpRopes[s] = new Rotary(c, c.MaxPositionEmbeddings, dtype, tp.Devices[s]); owned.Add(tpRopes[s]); }
            }
            return new StageModel(c, start, end, dtype, layers, rope, embedIn, finalW, finalB, embedOut, tp, tpLayers, tpRopes, workers);
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
    public long WeightBytes => _layers.Sum(l => l.WeightBytes) + (_tpLayers?.Sum(l => l.WeightBytes) ?? 0) + (_embedOut?.Bytes ?? 0)
        + new[] { _embedIn, _finalW, _finalB }.Where(t => t is not null).Sum(t => t!.NumberOfElements * t.ElementSize);

    /// <summary>Bytes of the transformer layers' weights (all shards; no embedding or head).</summary>
    public long LayerWeightBytes => _layers.Sum(l => l.WeightBytes) + (_tpLayers?.Sum(l => l.WeightBytes) ?? 0);

    /// <summary>Bytes of weights read to produce one token at batch 1 (the embedding reads one row).</summary>
    public long WeightBytesReadPerToken => WeightBytes - (_embedIn is null ? 0 : _embedIn.NumberOfElements * _embedIn.ElementSize);

    /// <summary>Creates an empty KV cache for this stage's layers.</summary>
    public KvCache NewCache(int batch = 1, int initialCapacity = 64) =>
        new(LayerCount, batch, Config.NumHeads, Config.HeadDim, ComputeDtype, MaxTokens, initialCapacity, TensorParallel?.Devices);

    /// <summary>KV bytes one token costs on this stage.</summary>
    public long KvBytesPerToken => KvCache.BytesPerTokenPerLayer(Config, ComputeDtype) * LayerCount;

    /// <summary>Token ids [B, T] (int64) → embeddings [B, T, H]. First stage only.</summary>
    /// <remarks>
    /// Ids are not range-checked here (that would cost device syncs on every first-stage step): they are validated
    /// once where they enter a process, on CPU data — the coordinator's request parser, a node's <c>StageHost</c>,
    /// <see cref="Swarm.Engine.LocalGenerator"/>.
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
    /// Runs this stage on one step of a session. Input: token ids [B, T] for the first stage, hidden
    /// states [B, T, H] otherwise (any float dtype). Output: hidden states [B, T, H] (compute dtype), or for the
    /// last stage f32 logits — of the last position [B, V] unless <paramref name="allPositions"/> ([B, T, V]).
    /// The cache advances by T. Inputs are never disposed; the caller owns the result.
    /// </summary>
    public Tensor Forward(Tensor input, KvCache cache, bool allPositions = false) =>
        Forward(input, cache, Start, End, allPositions);

    /// <summary>
    /// Runs only layers [<paramref name="from"/>, <paramref name="to"/>) of this stage (a route may use part of
    /// what a node holds): embeds when <paramref name="from"/> is 0, applies the head when <paramref name="to"/>
    /// is the model's last layer. A session must use the same sub-range on every step of one cache.
    /// </summary>
    public Tensor Forward(Tensor input, KvCache cache, int from, int to, bool allPositions = false)
    {
        if (from < Start || to > End || from > to)
            throw new ArgumentOutOfRangeException(nameof(from), $"layers [{from}, {to}) are not inside this stage's [{Start}, {End})");
        using var scope = NewDisposeScope();
        using var _ = inference_mode();
        var x = from == 0 ? Embed(input) : input.to_type(ComputeDtype);
        int t = (int)x.shape[1];
        if (cache.Length + t > MaxTokens)
            throw new InvalidOperationException($"context full: {cache.Length + t} tokens exceed the limit of {MaxTokens}");
        Tensor? mask = null;
        if (t > 1)
        {
            // causal over cached + new positions: query i (absolute cache.Length+i) sees keys ≤ its position
            int total = cache.Length + t;
            mask = ones([t, total], ScalarType.Bool).tril(cache.Length);
        }
        if (_tpLayers is not null)
        {
            if (cache.Shards != TensorParallel!.Shards)
                throw new ArgumentException($"the KV cache has {cache.Shards} head shards, this stage {TensorParallel.Shards}", nameof(cache));
            cache.Reserve(cache.Length + t); // shards append from their own threads
            x = x.to(HomeDevice);
            for (int i = from - Start; i < to - Start; i++)
                x = _tpLayers[i].Forward(x, _tpRopes!, i, cache, mask);
            cache.Advance(t);
            // Results leave on the CPU (a no-op copy there), whatever the shards' devices.
            var output = to != Config.NumLayers ? x : Head(x, allPositions);
            return output.cpu().MoveToOuterDisposeScope();
        }
        for (int i = from - Start; i < to - Start; i++)
            x = _layers[i].Forward(x, _rope, i, cache, mask);
        cache.Advance(t);
        if (to != Config.NumLayers) return x.MoveToOuterDisposeScope();
        return Head(x, allPositions).MoveToOuterDisposeScope();
    }

    /// <summary>A KV block pool for this stage's layers holding <paramref name="totalBlocks"/> blocks.</summary>
    public KvBlockPool NewBlockPool(int totalBlocks, int blockSize = KvBlockPool.DefaultBlockSize) =>
        new(LayerCount, Config.NumHeads, Config.HeadDim, ComputeDtype, totalBlocks, blockSize, TensorParallel?.Devices);

    /// <summary>
    /// Runs layers [<paramref name="from"/>, <paramref name="to"/>) on one step of each of several sequences at
    /// once (continuous batching): the rows of all items go through every dense op together, so each weight is
    /// read once per call; attention is per sequence against its own cached positions, so results do not depend
    /// on what else is in the batch. Sequences may be at different lengths and bring any number of new positions
    /// (decode: 1, prefill chunk: many). Each item's <see cref="BatchItem.Kv"/> must hold blocks for its new
    /// positions (<see cref="KvBlockPool.TryReserve"/>) and advances by them.
    /// Returns per item: on the last stage f32 logits [V] of its last position (null when it wants none),
    /// otherwise hidden states [t, H] in the compute dtype. The caller owns the results; inputs are not disposed.
    /// </summary>
    public Tensor?[] ForwardBatch(IReadOnlyList<BatchItem> items, KvBlockPool pool, int from, int to)
    {
        if (from < Start || to > End || from >= to)
            throw new ArgumentOutOfRangeException(nameof(from), $"layers [{from}, {to}) are not inside this stage's [{Start}, {End})");
        if (pool.Layers != LayerCount || pool.Heads != Config.NumHeads || pool.HeadDim != Config.HeadDim || pool.Dtype != ComputeDtype
            || pool.Shards != (TensorParallel?.Shards ?? 1))
            throw new ArgumentException("the KV pool was not made for this stage", nameof(pool));
        if (items.Count == 0) return [];
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

        using var scope = NewDisposeScope();
        using var _ = inference_mode();
        Tensor x;
        if (from == 0)
        {
            var ids = cat(items.Select(it => it.Input.reshape(-1)).ToArray(), 0);
            x = Embed(ids.unsqueeze(0)).squeeze(0);
        }
        else x = cat(items.Select(it => it.Input.reshape(-1, h).to_type(ComputeDtype)).ToArray(), 0);

        var plan = Plan(items, rows, offsets, total);
        if (_tpLayers is not null)
        {
            var plans = TensorParallel!.Devices.Select(d => ShardPlan.On(plan, d)).ToArray();
            x = x.to(HomeDevice);
            for (int i = from - Start; i < to - Start; i++)
                x = _tpLayers[i].ForwardBatch(x, _tpRopes!, i, pool, plans);
            foreach (var sp in plans) sp.Dispose();
        }
        else
            for (int i = from - Start; i < to - Start; i++)
                x = _layers[i].ForwardBatch(x, _rope, i, pool, plan);
        for (int i = 0; i < items.Count; i++) items[i].Kv.Length += rows[i];

        var results = new Tensor?[items.Count];
        if (to != Config.NumLayers)
        {
            if (_tpLayers is not null) x = x.cpu();
            for (int i = 0; i < items.Count; i++) results[i] = x.narrow(0, offsets[i], rows[i]).MoveToOuterDisposeScope();
            return results;
        }
        var want = Enumerable.Range(0, items.Count).Where(i => items[i].WantLogits).ToArray();
        if (want.Length == 0) return results;
        using var lastRows = tensor(want.Select(i => (long)(offsets[i] + rows[i] - 1)).ToArray(), ScalarType.Int64);
        var logits = Head(x.index_select(0, lastRows.to(x.device)).unsqueeze(1), allPositions: false);   // [k, V]
        if (_tpLayers is not null) logits = logits.cpu();
        for (int j = 0; j < want.Length; j++) results[want[j]] = logits[j].MoveToOuterDisposeScope();
        return results;
    }

    private static BatchPlan Plan(IReadOnlyList<BatchItem> items, int[] rows, int[] offsets, int total)
    {
        var positions = new long[total];
        var slots = new long[total];
        var decodes = new List<int>();
        var chunks = new List<BatchPlan.Chunk>();
        for (int i = 0; i < items.Count; i++)
        {
            var kv = items[i].Kv;
            for (int j = 0; j < rows[i]; j++)
            {
                positions[offsets[i] + j] = kv.Length + j;
                slots[offsets[i] + j] = kv.Slot(kv.Length + j);
            }
            if (rows[i] == 1) { decodes.Add(i); continue; }
            int len = kv.Length + rows[i];
            Tensor? seqSlots = null;
            long start = kv.ContiguousStart ?? -1;
            if (start < 0)
            {
                var list = new long[len];
                for (int p = 0; p < len; p++) list[p] = kv.Slot(p);
                seqSlots = tensor(list, ScalarType.Int64);
            }
            // query j (absolute position Length + j) sees keys ≤ its position
            chunks.Add(new BatchPlan.Chunk(offsets[i], rows[i], len, seqSlots, start, ones([rows[i], len], ScalarType.Bool).tril(kv.Length)));
        }
        Tensor? decodeRows = null, decodeSlots = null, decodeMask = null;
        long? decodeStart = null;
        int decodeLength = 0;
        if (decodes.Count == 1 && items[decodes[0]].Kv.ContiguousStart is long only)
        {
            // One decode over consecutive blocks (e.g. a session alone on the node): attend to a view, copy nothing.
            decodeLength = items[decodes[0]].Kv.Length + 1;
            decodeStart = only;
            decodeRows = tensor(new long[] { offsets[decodes[0]] }, ScalarType.Int64);
        }
        else if (decodes.Count > 0)
        {
            decodeLength = decodes.Max(i => items[i].Kv.Length + 1);
            var table = new long[decodes.Count * decodeLength];
            bool padded = false;
            var mask = new bool[decodes.Count * decodeLength];
            for (int d = 0; d < decodes.Count; d++)
            {
                var kv = items[decodes[d]].Kv;
                int len = kv.Length + 1;
                padded |= len < decodeLength;
                for (int p = 0; p < decodeLength; p++)
                {
                    // Padding points at the sequence's own position 0 (real data) and is masked out.
                    table[d * decodeLength + p] = kv.Slot(p < len ? p : 0);
                    mask[d * decodeLength + p] = p < len;
                }
            }
            decodeRows = tensor(decodes.Select(i => (long)offsets[i]).ToArray(), ScalarType.Int64);
            decodeSlots = tensor(table, ScalarType.Int64);
            if (padded) decodeMask = tensor(mask, ScalarType.Bool).view(decodes.Count, 1, 1, decodeLength);
        }
        return new BatchPlan
        {
            Positions = tensor(positions, ScalarType.Int64),
            Slots = tensor(slots, ScalarType.Int64),
            DecodeRows = decodeRows, DecodeSlots = decodeSlots, DecodeStart = decodeStart, DecodeMask = decodeMask, DecodeLength = decodeLength,
            Chunks = chunks,
        };
    }

    /// <summary>Final LayerNorm + unembedding → f32 logits.</summary>
    public Tensor Head(Tensor hidden, bool allPositions)
    {
        if (_embedOut is null) throw new InvalidOperationException("only the last stage has the unembedding");
        using var scope = NewDisposeScope();
        var x = hidden.to_type(ComputeDtype);
        if (!allPositions) x = x.narrow(1, x.shape[1] - 1, 1).squeeze(1);
        x = F.layer_norm(x, _normShape, _finalW!, _finalB!, Config.LayerNormEps);
        var logits = _embedOut.Forward(x);
        return logits.to_type(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        foreach (var l in _layers) l.Dispose();
        if (_tpLayers is not null) foreach (var l in _tpLayers) l.Dispose();
        if (_tpRopes is not null) foreach (var r in _tpRopes) r.Dispose();
        _tpWorkers?.Dispose();
        _rope.Dispose();
        _embedIn?.Dispose(); _finalW?.Dispose(); _finalB?.Dispose(); _embedOut?.Dispose();
    }
}
