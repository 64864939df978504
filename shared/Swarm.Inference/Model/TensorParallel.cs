using Swarm.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Swarm.Model;

/// <summary>
/// Tensor-parallel settings of a stage: how many shards each layer is split into and the device of each shard.
/// </summary>
public sealed class TensorParallelOptions
{
    public int Shards { get; }
    public IReadOnlyList<Device> Devices { get; }
    /// <summary>The device strings as given (for messages and telemetry).</summary>
    public IReadOnlyList<string> DeviceNames { get; }

    private TensorParallelOptions(int shards, IReadOnlyList<Device> devices, IReadOnlyList<string> names)
    {
        Shards = shards; Devices = devices; DeviceNames = names;
    }

    /// <summary>
    /// Parses <c>--tp N --devices d0,d1,…</c>. Devices: <c>cpu</c> or <c>cuda:K</c> (<c>cuda</c> = <c>cuda:0</c>); default all
    /// <c>cpu</c>; one device (e.g. <c>cpu</c>) is used by every shard, otherwise exactly N are needed. A CUDA device needs a
    /// CUDA build of libtorch with that device present. Throws <see cref="ArgumentException"/> with a message for the user.
    /// </summary>
    public static TensorParallelOptions Parse(int shards, string? devices)
    {
        if (shards < 1) throw new ArgumentException($"--tp must be ≥ 1 (got {shards})");
        var names = string.IsNullOrWhiteSpace(devices)
            ? Enumerable.Repeat("cpu", shards).ToArray()
            : devices.Split(',', StringSplitOptions.TrimEntries);
        if (names.Length == 1 && shards > 1) names = Enumerable.Repeat(names[0], shards).ToArray();
        if (names.Length != shards)
            throw new ArgumentException($"--devices lists {names.Length} devices but --tp is {shards}: give one device per shard (or one for all)");
        var parsed = names.Select(ParseDevice).ToArray();
        return new TensorParallelOptions(shards, parsed, names);
    }

    /// <summary>All shards on the CPU.</summary>
    public static TensorParallelOptions Cpu(int shards) => Parse(shards, null);

    private static Device ParseDevice(string name)
    {
        string n = name.ToLowerInvariant();
        if (n == "cpu") return CPU;
        if (n == "cuda" || n.StartsWith("cuda:", StringComparison.Ordinal))
        {
            int index = 0;
            if (n.Length > 4 && (!int.TryParse(n.AsSpan(5), out index) || index < 0))
                throw new ArgumentException($"--devices: '{name}' is not a device (expected cpu or cuda:K)");
            if (!cuda.is_available())
                throw new ArgumentException($"--devices: '{name}' requested but CUDA is not available in this build/machine");
            if (index >= cuda.device_count())
                throw new ArgumentException($"--devices: '{name}' requested but only {cuda.device_count()} CUDA device(s) are present");
            return new Device(DeviceType.CUDA, index);
        }
        throw new ArgumentException($"--devices: unknown device '{name}' (expected cpu or cuda:K)");
    }

    /// <summary>Checks that the model can be split this way; throws <see cref="ArgumentException"/> otherwise.</summary>
    public void Validate(ModelConfig c)
    {
        if (Shards > c.NumHeads)
            throw new ArgumentException($"--tp {Shards}: more shards than attention heads ({c.NumHeads})");
        if (c.NumHeads % Shards != 0)
            throw new ArgumentException($"--tp {Shards}: the model's {c.NumHeads} attention heads are not divisible by {Shards}");
        if (c.IntermediateSize % Shards != 0)
            throw new ArgumentException($"--tp {Shards}: the model's intermediate size {c.IntermediateSize} is not divisible by {Shards}");
    }

    public override string ToString() => $"tp={Shards} devices={string.Join(",", DeviceNames)}";
}

/// <summary>
/// One dedicated thread per tensor-parallel shard. <see cref="Run"/> hands body(s) to shard s's thread and returns
/// when all are done (exceptions propagate). Each thread runs in inference mode with its own libtorch intra-op
/// thread budget (set on that thread: OpenMP's thread count is per calling thread), so N shards on a CPU share the
/// cores instead of each spawning a full-width pool; on a GPU the thread is what keeps the shard's stream fed.
/// </summary>
public sealed class ShardWorkers : IDisposable
{
    private readonly Thread[] _threads;
    private readonly SemaphoreSlim[] _go;
    private readonly CountdownEvent _done;
    private readonly object _gate = new();
    private readonly Exception?[] _errors;
    private readonly long[] _live;
    private Action<int>? _work;
    private volatile bool _stopping;

    public int Count => _threads.Length;
    /// <summary>Intra-op threads of each shard's thread.</summary>
    public int ThreadsPerShard { get; }

    /// <summary>
    /// TorchSharp's live-tensor count of each shard thread after its last job (diagnostics: tensors a shard creates and
    /// hands back are disposed by the caller's thread, so a leak shows as a growing sum with the caller's own count).
    /// </summary>
    public long[] LiveTensorCounts => (long[])_live.Clone();

    public ShardWorkers(int shards, int threadsPerShard)
    {
        ThreadsPerShard = Math.Max(1, threadsPerShard);
        _threads = new Thread[shards];
        _go = new SemaphoreSlim[shards];
        _errors = new Exception?[shards];
        _live = new long[shards];
        _done = new CountdownEvent(0);
        for (int i = 0; i < shards; i++)
        {
            int id = i;
            _go[i] = new SemaphoreSlim(0);
            _threads[i] = new Thread(() => Loop(id)) { IsBackground = true, Name = $"swarm-tp-shard-{id}" };
            _threads[i].Start();
        }
    }

    public void Run(Action<int> body)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_stopping, this);
            _work = body;
            Array.Clear(_errors);
            _done.Reset(_threads.Length);
            foreach (var g in _go) g.Release();
            _done.Wait();
            _work = null;
            var errors = _errors.Where(e => e is not null).ToArray();
            if (errors.Length > 0) throw new AggregateException("a tensor-parallel shard failed", errors!);
        }
    }

    private void Loop(int id)
    {
        torch.set_num_threads(ThreadsPerShard);
        using var inference = inference_mode();
        while (true)
        {
            _go[id].Wait();
            if (_stopping) return;
            try { _work!(id); }
            catch (Exception e) { _errors[id] = e; }
            finally
            {
                _live[id] = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
                _done.Signal();
            }
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_stopping) return;
            _stopping = true;
        }
        foreach (var g in _go) g.Release();
        foreach (var t in _threads) t.Join();
        foreach (var g in _go) g.Dispose();
        _done.Dispose();
    }
}

/// <summary>
/// Shard s of N of one GPT-NeoX layer (Megatron-style), on its own device: heads [s·nh/N, (s+1)·nh/N) of
/// <c>query_key_value</c> (rows — contiguous thanks to the per-head [q,k,v] packing — and their bias), the matching input
/// columns of <c>dense</c> (row-parallel, no bias), rows [s·I/N, (s+1)·I/N) of <c>dense_h_to_4h</c> with their bias
/// (column-parallel), the matching input columns of <c>dense_4h_to_h</c> (row-parallel, no bias), replicated LayerNorms.
/// Produces partial attention and MLP outputs that the layer sums.
/// </summary>
internal sealed class TensorParallelShard : IDisposable
{
    private readonly ModelConfig _c;
    private readonly Tensor _ln1W, _ln1B, _ln2W, _ln2B;
    private readonly Dense _qkv, _dense, _up, _down;
    private readonly long[] _normShape;
    private readonly int _heads; // heads of this shard

    public int Shard { get; }
    public Device Device { get; }

    public TensorParallelShard(Checkpoint ckpt, int index, ScalarType dtype, int shard, int shards, Device device)
    {
        _c = ckpt.Config; Shard = shard; Device = device;
        long h = _c.HiddenSize, inter = _c.IntermediateSize, hd = _c.HeadDim;
        _heads = _c.NumHeads / shards;
        long h0 = (long)shard * _heads;                 // first head
        long iPer = inter / shards, i0 = shard * iPer;  // MLP columns
        string p = $"gpt_neox.layers.{index}.";
        var owned = new List<IDisposable>();
        Tensor On(Tensor t)
        {
            using (t)
            {
                var d = t.to(device).DetachFromDisposeScope();
                owned.Add(d);
                return d;
            }
        }
        Tensor Full(string name) => On(ckpt.Read(p + name, [h], dtype));
        Tensor Rows(string name, long[] shape, long start, long count) => On(ckpt.ReadRows(p + name, shape, start, count, dtype));
        Tensor Cols(string name, long[] shape, long start, long count) => On(ckpt.ReadColumns(p + name, shape, start, count, dtype));
        Dense D(Tensor w, Tensor? b)
        {
            owned.Remove(w); if (b is not null) owned.Remove(b);
            var d = new Dense(w, b, 1); // one block: the shard's own thread budget does the work
            owned.Add(d);
            return d;
        }
        try
        {
            _ln1W = Full("input_layernorm.weight"); _ln1B = Full("input_layernorm.bias");
            _ln2W = Full("post_attention_layernorm.weight"); _ln2B = Full("post_attention_layernorm.bias");
            long qkvRows = 3 * hd * _heads;
            _qkv = D(Rows("attention.query_key_value.weight", [3 * h, h], h0 * 3 * hd, qkvRows),
                     Rows("attention.query_key_value.bias", [3 * h], h0 * 3 * hd, qkvRows));
            _dense = D(Cols("attention.dense.weight", [h, h], h0 * hd, _heads * hd), null);
            _up = D(Rows("mlp.dense_h_to_4h.weight", [inter, h], i0, iPer), Rows("mlp.dense_h_to_4h.bias", [inter], i0, iPer));
            _down = D(Cols("mlp.dense_4h_to_h.weight", [h, inter], i0, iPer), null);
        }
        catch
        {
            foreach (var d in owned) d.Dispose();
            throw;
        }
        _normShape = [h];
    }

    /// <summary>Bytes of this shard's weights (replicated LayerNorms included).</summary>
    public long WeightBytes => new[] { _ln1W, _ln1B, _ln2W, _ln2B }.Sum(t => t.NumberOfElements * t.ElementSize)
        + _qkv.Bytes + _dense.Bytes + _up.Bytes + _down.Bytes;

    public Tensor LayerNorm1(Tensor x) => F.layer_norm(x, _normShape, _ln1W, _ln1B, _c.LayerNormEps);
    public Tensor LayerNorm2(Tensor x) => F.layer_norm(x, _normShape, _ln2W, _ln2B, _c.LayerNormEps);

    /// <summary>Partial attention output of this shard's heads (before the all-reduce, no dense bias). x: [B,T,H] on the shard's device.</summary>
    public Tensor Attention(Tensor x, Rotary rope, int layerSlot, KvCache cache, Tensor? mask)
    {
        long b = x.shape[0], t = x.shape[1];
        int hd = _c.HeadDim;
        var qkv = _qkv.Forward(LayerNorm1(x)).view(b, t, _heads, 3, hd);
        rope.RotateQueriesAndKeysInPlace(qkv, cache.Length);
        var q = qkv.select(3, 0).permute(0, 2, 1, 3);
        var k = qkv.select(3, 1).permute(0, 2, 1, 3);
        var v = qkv.select(3, 2).permute(0, 2, 1, 3);
        var (keys, values) = cache.Append(Shard, layerSlot, k, v);
        var attn = F.scaled_dot_product_attention(q, keys, values, mask, 0.0, false);
        keys.Dispose(); values.Dispose();
        return _dense.Forward(attn.permute(0, 2, 1, 3).reshape(b, t, _heads * hd));
    }

    /// <summary>Batched counterpart of <see cref="Attention"/> (see <see cref="NeoXLayer.ForwardBatch"/>): x [N, H], plan tensors on this device.</summary>
    public Tensor AttentionBatch(Tensor x, Rotary rope, int layerSlot, KvBlockPool pool, ShardPlan plan)
    {
        long n = x.shape[0];
        int nh = _heads, hd = _c.HeadDim;
        var qkv = _qkv.Forward(LayerNorm1(x)).view(n, nh, 3, hd);
        rope.RotateQueriesAndKeysInPlaceAt(qkv, plan.Positions);
        var q = qkv.select(2, 0);
        var k = qkv.select(2, 1);
        var v = qkv.select(2, 2);
        var keyStore = pool.Keys(Shard, layerSlot);
        var valueStore = pool.Values(Shard, layerSlot);
        keyStore.index_copy_(0, plan.Slots, k);
        valueStore.index_copy_(0, plan.Slots, v);

        var attn = empty([n, nh, hd], x.dtype, Device);
        if (plan.DecodeRows is { } rows)
        {
            long m = rows.shape[0], len = plan.Plan.DecodeLength;
            var qd = q.index_select(0, rows).unsqueeze(2);
            var kd = Gather(keyStore, plan.DecodeSlots, plan.Plan.DecodeStart ?? 0, len).view(m, len, nh, hd).permute(0, 2, 1, 3);
            var vd = Gather(valueStore, plan.DecodeSlots, plan.Plan.DecodeStart ?? 0, len).view(m, len, nh, hd).permute(0, 2, 1, 3);
            var od = F.scaled_dot_product_attention(qd, kd, vd, plan.DecodeMask, 0.0, false);
            attn.index_copy_(0, rows, od.squeeze(2));
        }
        for (int c = 0; c < plan.Plan.Chunks.Count; c++)
        {
            var p = plan.Plan.Chunks[c];
            var qp = q.narrow(0, p.Offset, p.Rows).permute(1, 0, 2).unsqueeze(0);
            var kp = Gather(keyStore, plan.ChunkSlots[c], p.Start, p.Length).permute(1, 0, 2).unsqueeze(0);
            var vp = Gather(valueStore, plan.ChunkSlots[c], p.Start, p.Length).permute(1, 0, 2).unsqueeze(0);
            var op = F.scaled_dot_product_attention(qp, kp, vp, plan.ChunkMasks[c], 0.0, false);
            attn.narrow(0, p.Offset, p.Rows).copy_(op.squeeze(0).permute(1, 0, 2));
        }
        return _dense.Forward(attn.view(n, nh * hd));
    }

    private static Tensor Gather(Tensor store, Tensor? slots, long start, long length) =>
        slots is null ? store.narrow(0, start, length) : store.index_select(0, slots);

    /// <summary>Partial MLP output of this shard's columns (no dense_4h_to_h bias). h: LayerNorm-2 output on the shard's device.</summary>
    public Tensor Mlp(Tensor h) => _down.Forward(F.gelu(_up.Forward(h)));

    public void Dispose()
    {
        foreach (var t in new[] { _ln1W, _ln1B, _ln2W, _ln2B }) t.Dispose();
        _qkv.Dispose(); _dense.Dispose(); _up.Dispose(); _down.Dispose();
    }
}

/// <summary>A <see cref="BatchPlan"/>'s tensors moved to one shard's device (views on the CPU).</summary>
internal sealed class ShardPlan : IDisposable
{
    public required BatchPlan Plan { get; init; }
    public required Tensor Positions { get; init; }
    public required Tensor Slots { get; init; }
    public Tensor? DecodeRows { get; init; }
    public Tensor? DecodeSlots { get; init; }
    public Tensor? DecodeMask { get; init; }
    public required Tensor?[] ChunkSlots { get; init; }
    public required Tensor?[] ChunkMasks { get; init; }

    public static ShardPlan On(BatchPlan plan, Device device) => new()
    {
        Plan = plan,
        Positions = plan.Positions.to(device),
        Slots = plan.Slots.to(device),
        DecodeRows = plan.DecodeRows?.to(device),
        DecodeSlots = plan.DecodeSlots?.to(device),
        DecodeMask = plan.DecodeMask?.to(device),
        ChunkSlots = plan.Chunks.Select(c => c.Slots?.to(device)).ToArray(),
        ChunkMasks = plan.Chunks.Select(c => c.Mask?.to(device)).ToArray(),
    };

    public void Dispose()
    {
        Positions.Dispose(); Slots.Dispose(); DecodeRows?.Dispose(); DecodeSlots?.Dispose(); DecodeMask?.Dispose();
        foreach (var t in ChunkSlots) t?.Dispose();
        foreach (var t in ChunkMasks) t?.Dispose();
    }
}

/// <summary>
/// A GPT-NeoX layer split across N <see cref="TensorParallelShard"/>s, each on its device and its own worker thread.
/// Per step: every shard computes its heads' attention and its MLP columns; the partial outputs are moved to the first
/// device and summed there — once for attention, once for the MLP — and the row-parallel biases (dense, dense_4h_to_h)
/// are added once, after the sums. With the parallel residual both partials come from the same input, so the shards
/// compute them in one round trip (still two separate reductions); with the sequential residual the MLP needs the
/// reduced attention first, so that takes two rounds.
/// </summary>
public sealed class TensorParallelLayer : IDisposable
{
    private readonly ModelConfig _c;
    private readonly TensorParallelShard[] _shards;
    private readonly Tensor _denseBias, _downBias; // on the first device
    private readonly long[] _normShape;
    private readonly ShardWorkers _workers;

    public int Index { get; }
    public int Shards => _shards.Length;
    public Device ReduceDevice { get; }

    public TensorParallelLayer(Checkpoint ckpt, int index, ScalarType dtype, TensorParallelOptions tp, ShardWorkers workers)
    {
        _c = ckpt.Config; Index = index; _workers = workers;
        tp.Validate(_c);
        ReduceDevice = tp.Devices[0];
        string p = $"gpt_neox.layers.{index}.";
        var shards = new List<TensorParallelShard>();
        try
        {
            for (int s = 0; s < tp.Shards; s++) shards.Add(new TensorParallelShard(ckpt, index, dtype, s, tp.Shards, tp.Devices[s]));
            using (var b = ckpt.Read(p + "attention.dense.bias", [_c.HiddenSize], dtype)) _denseBias = b.to(ReduceDevice).DetachFromDisposeScope();
            using (var b = ckpt.Read(p + "mlp.dense_4h_to_h.bias", [_c.HiddenSize], dtype)) _downBias = b.to(ReduceDevice).DetachFromDisposeScope();
        }
        catch
        {
            foreach (var s in shards) s.Dispose();
            _denseBias?.Dispose();
            throw;
        }
        _shards = shards.ToArray();
        _normShape = [_c.HiddenSize];
    }

    /// <summary>Bytes of shard <paramref name="shard"/>'s weights.</summary>
    public long ShardWeightBytes(int shard) => _shards[shard].WeightBytes;

    /// <summary>Device of shard <paramref name="shard"/>.</summary>
    public Device ShardDevice(int shard) => _shards[shard].Device;

    /// <summary>Bytes of all weights of the layer (shards + the row-parallel biases kept on the first device).</summary>
    public long WeightBytes => _shards.Sum(s => s.WeightBytes) + 2 * _denseBias.NumberOfElements * _denseBias.ElementSize;

    /// <summary>Single-session step. x: [B, T, H] on the first device → [B, T, H]. The cache must be sharded and reserved.</summary>
    public Tensor Forward(Tensor x, Rotary[] ropes, int layerSlot, KvCache cache, Tensor? mask)
    {
        using var scope = NewDisposeScope();
        return Step(x,
            (s, xs) => s.Attention(xs, ropes[s.Shard], layerSlot, cache, mask is null ? null : mask.to(s.Device)))
            .MoveToOuterDisposeScope();
    }

    /// <summary>Batched step (see <see cref="NeoXLayer.ForwardBatch"/>). x: [N, H] on the first device.</summary>
    internal Tensor ForwardBatch(Tensor x, Rotary[] ropes, int layerSlot, KvBlockPool pool, ShardPlan[] plans)
    {
        using var scope = NewDisposeScope();
        return Step(x, (s, xs) => s.AttentionBatch(xs, ropes[s.Shard], layerSlot, pool, plans[s.Shard])).MoveToOuterDisposeScope();
    }

    private Tensor Step(Tensor x, Func<TensorParallelShard, Tensor, Tensor> attention)
    {
        int n = _shards.Length;
        var attnParts = new Tensor?[n];
        var mlpParts = new Tensor?[n];
        bool parallel = _c.UseParallelResidual;
        try
        {
            _workers.Run(s =>
            {
                var shard = _shards[s];
                using var local = NewDisposeScope(); // worker thread's scope: results are detached and handed back
                var xs = x.to(shard.Device);
                attnParts[s] = attention(shard, xs).to(ReduceDevice).DetachFromDisposeScope();
                if (parallel) mlpParts[s] = shard.Mlp(shard.LayerNorm2(xs)).to(ReduceDevice).DetachFromDisposeScope();
            });
            var attn = Reduce(attnParts, _denseBias);
            if (parallel) return x + attn + Reduce(mlpParts, _downBias);
            var mid = x + attn;
            _workers.Run(s =>
            {
                var shard = _shards[s];
                using var local = NewDisposeScope();
                mlpParts[s] = shard.Mlp(shard.LayerNorm2(mid.to(shard.Device))).to(ReduceDevice).DetachFromDisposeScope();
            });
            return mid + Reduce(mlpParts, _downBias);
        }
        finally
        {
            foreach (var t in attnParts) t?.Dispose();
            foreach (var t in mlpParts) t?.Dispose();
        }
    }

    /// <summary>All-reduce on the first device: Σ partials + bias (the row-parallel bias is added once).</summary>
    private static Tensor Reduce(Tensor?[] parts, Tensor bias)
    {
        var sum = parts[0]! + bias;
        for (int i = 1; i < parts.Length; i++) sum.add_(parts[i]!);
        return sum;
    }

    public void Dispose()
    {
        foreach (var s in _shards) s.Dispose();
        _denseBias.Dispose(); _downBias.Dispose();
    }
}
