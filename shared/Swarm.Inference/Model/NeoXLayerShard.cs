using Swarm.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Swarm.Model;

/// <summary>
/// Shard s of N of one GPT-NeoX layer (Megatron-style), on its own device: heads [s·nh/N, (s+1)·nh/N) of
/// <c>query_key_value</c> (rows — contiguous thanks to the per-head [q,k,v] packing — and their bias), the matching input
/// columns of <c>dense</c> (row-parallel), rows [s·I/N, (s+1)·I/N) of <c>dense_h_to_4h</c> with their bias
/// (column-parallel), the matching input columns of <c>dense_4h_to_h</c> (row-parallel), replicated LayerNorms.
/// With N &gt; 1 it produces partial attention and MLP outputs without the row-parallel biases, which the layer sums
/// and adds once; the single shard of an unsplit layer holds every weight and keeps those biases in its products.
/// </summary>
internal sealed class NeoXLayerShard : IDisposable
{
    private readonly ModelConfig _c;
    private readonly Tensor _ln1W, _ln1B, _ln2W, _ln2B;
    private readonly LinearWeights _qkv, _dense, _up, _down;
    private readonly long[] _normShape;
    private readonly int _heads; // heads of this shard

    public int Shard { get; }
    public Device Device { get; }

    /// <param name="weights">How the four matrices are stored; biases and LayerNorms are in its compute dtype.</param>
    /// <param name="parallelism">Output-row blocks of each <see cref="LinearWeights"/> (the batch-1 GEMV split across cores;
    /// 1 for a shard of a split layer, whose own thread budget does the work).</param>
    public NeoXLayerShard(Checkpoint ckpt, int index, WeightFormat weights, int shard, int shards, Device device, int parallelism)
    {
        var dtype = weights.ComputeDtype();
        var read = weights.ReadDtype();
        _c = ckpt.Config; Shard = shard; Device = device;
        long h = _c.HiddenSize, inter = _c.IntermediateSize, hd = _c.HeadDim;
        _heads = _c.NumHeads / shards;
        long h0 = (long)shard * _heads;                 // first head
        long iPer = inter / shards, i0 = shard * iPer;  // MLP columns
        bool whole = shards == 1;
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
        Tensor Rows(string name, long[] shape, long start, long count, ScalarType as_) => On(ckpt.ReadRows(p + name, shape, start, count, as_));
        Tensor Cols(string name, long[] shape, long start, long count) =>
            On(count == shape[1] ? ckpt.Read(p + name, shape, read) : ckpt.ReadColumns(p + name, shape, start, count, read));
        LinearWeights D(Tensor w, Tensor? b)
        {
            owned.Remove(w); if (b is not null) owned.Remove(b);
            var d = LinearWeights.Create(w, b, weights, parallelism);
            owned.Add(d);
            return d;
        }
        try
        {
            _ln1W = Full("input_layernorm.weight"); _ln1B = Full("input_layernorm.bias");
            _ln2W = Full("post_attention_layernorm.weight"); _ln2B = Full("post_attention_layernorm.bias");
            long qkvRows = 3 * hd * _heads;
            _qkv = D(Rows("attention.query_key_value.weight", [3 * h, h], h0 * 3 * hd, qkvRows, read),
                     Rows("attention.query_key_value.bias", [3 * h], h0 * 3 * hd, qkvRows, dtype));
            _dense = D(Cols("attention.dense.weight", [h, h], h0 * hd, _heads * hd), whole ? Full("attention.dense.bias") : null);
            _up = D(Rows("mlp.dense_h_to_4h.weight", [inter, h], i0, iPer, read), Rows("mlp.dense_h_to_4h.bias", [inter], i0, iPer, dtype));
            _down = D(Cols("mlp.dense_4h_to_h.weight", [h, inter], i0, iPer), whole ? Full("mlp.dense_4h_to_h.bias") : null);
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

    /// <summary>This shard's weights for <see cref="ManagedDecode"/> (the LayerNorms copied to f32 arrays).</summary>
    internal DecodeLayer DecodeWeights() =>
        new(DecodeLayer.Host(_ln1W), DecodeLayer.Host(_ln1B), DecodeLayer.Host(_ln2W), DecodeLayer.Host(_ln2B), _qkv, _dense, _up, _down);

    public Tensor LayerNorm1(Tensor x) => F.layer_norm(x, _normShape, _ln1W, _ln1B, _c.LayerNormEps);
    public Tensor LayerNorm2(Tensor x) => F.layer_norm(x, _normShape, _ln2W, _ln2B, _c.LayerNormEps);

    /// <summary>
    /// Attention output of this shard's heads for one batched step. x: [N, H] on the shard's device, the new rows of every
    /// sequence back to back. The new keys/values go to the sequences' pool slots (<see cref="BatchPlan.Slots"/>);
    /// attention runs per sequence against its own positions only, so no sequence sees another's. Returns [N, H].
    /// </summary>
    public Tensor Attention(Tensor x, Rotary rope, int layerSlot, KvBlockPool pool, BatchPlan plan)
    {
        long n = x.shape[0];
        int nh = _heads, hd = _c.HeadDim;
        // [N, 3·H/S] → [N, heads, 3, hd]: GPT-NeoX packs [q, k, v] per head.
        var qkv = _qkv.Forward(LayerNorm1(x)).view(n, nh, 3, hd);
        rope.RotateQueriesAndKeysInPlace(qkv, plan.Positions); // q and k of every head in one pass, on the fresh buffer
        var q = qkv.select(2, 0);
        var k = qkv.select(2, 1);
        var v = qkv.select(2, 2);
        var keyStore = pool.Keys(Shard, layerSlot);
        var valueStore = pool.Values(Shard, layerSlot);
        keyStore.index_copy_(0, plan.Slots, k);
        valueStore.index_copy_(0, plan.Slots, v);

        // One group of decodes in batch order (every row), or one chunk alone: its attention output is the whole result,
        // not copied into a buffer first.
        bool alone = plan.Chunks.Count + plan.DecodeGroups.Count == 1;
        Tensor? attn = alone ? null : empty([n, nh, hd], x.dtype, x.device);
        foreach (var g in plan.DecodeGroups)
        {
            // Single-position steps of similar lengths: one attention call, over views of their windows or one padded gather.
            var qd = (attn is null ? q : q.index_select(0, g.Rows)).unsqueeze(2);     // [m, nh, 1, hd]
            var kd = DecodeWindow(keyStore, g).permute(0, 2, 1, 3);                   // [m, nh, len, hd]
            var vd = DecodeWindow(valueStore, g).permute(0, 2, 1, 3);
            var od = DecodeAttention(qd, kd, vd, g.Mask).squeeze(2);                  // [m, nh, hd]
            if (attn is null) return _dense.Forward(od.reshape(n, nh * hd));
            attn.index_copy_(0, g.Rows, od);
        }
        foreach (var c in plan.Chunks)
        {
            // Multi-position steps (prefill chunks): causal attention over the sequence's positions so far.
            var qp = q.narrow(0, c.Offset, c.Rows).permute(1, 0, 2).unsqueeze(0);                // [1, nh, t, hd]
            var kp = Gather(keyStore, c.Slots, c.Start, c.Length).permute(1, 0, 2).unsqueeze(0); // [1, nh, L, hd]
            var vp = Gather(valueStore, c.Slots, c.Start, c.Length).permute(1, 0, 2).unsqueeze(0);
            var op = F.scaled_dot_product_attention(qp, kp, vp, c.Mask, 0.0, false).squeeze(0).permute(1, 0, 2); // [t, nh, hd]
            if (attn is null) return _dense.Forward(op.reshape(n, nh * hd));
            attn.narrow(0, c.Offset, c.Rows).copy_(op);
        }
        return _dense.Forward(attn!.view(n, nh * hd));
    }

    /// <summary>
    /// Attention of one query position per sequence. On the CPU libtorch's bf16/f16 kernel for a single query is about 4×
    /// slower than its f32 one (measured on pythia-160m shapes: 280 vs 70 µs a layer at batch 1, 2.0 vs 0.5 ms at batch
    /// 8), far more than the f32 copies of the keys and values cost, so there it runs in f32 (also the more exact result).
    /// </summary>
    private static Tensor DecodeAttention(Tensor q, Tensor k, Tensor v, Tensor? mask)
    {
        if (q.dtype == ScalarType.Float32 || q.device_type != DeviceType.CPU)
            return F.scaled_dot_product_attention(q, k, v, mask, 0.0, false);
        var f = ScalarType.Float32;
        return F.scaled_dot_product_attention(q.to_type(f), k.to_type(f), v.to_type(f), mask, 0.0, false).to_type(q.dtype);
    }

    /// <summary>MLP output of this shard's columns. h: LayerNorm-2 output on the shard's device.</summary>
    public Tensor Mlp(Tensor h) => _down.Forward(F.gelu(_up.Forward(h)));

    /// <summary>
    /// The positions a group of decodes attends to, [m, len, heads, hd]: a strided view of the store when every decode's
    /// positions are one contiguous run (<see cref="BatchPlan.DecodeGroup.Start"/>, <see cref="BatchPlan.DecodeGroup.Stride"/>),
    /// else one gather.
    /// </summary>
    private Tensor DecodeWindow(Tensor store, BatchPlan.DecodeGroup g)
    {
        if (g.Slots is { } slots) return store.index_select(0, slots).view(g.Count, g.Length, _heads, _c.HeadDim);
        long row = store.stride(0);
        return store.as_strided([g.Count, g.Length, _heads, _c.HeadDim], [g.Stride * row, row, store.stride(1), store.stride(2)],
            store.storage_offset() + g.Start * row);
    }

    /// <summary>Rows of a pool's storage: gathered by slot, or a view of the contiguous range [start, start+length).</summary>
    private static Tensor Gather(Tensor store, Tensor? slots, long start, long length) =>
        slots is null ? store.narrow(0, start, length) : store.index_select(0, slots);

    public void Dispose()
    {
        foreach (var t in new[] { _ln1W, _ln1B, _ln2W, _ln2B }) t.Dispose();
        _qkv.Dispose(); _dense.Dispose(); _up.Dispose(); _down.Dispose();
    }
}
