using Swarm.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Swarm.Model;

/// <summary>
/// One GPT-NeoX transformer layer: LayerNorms, fused QKV attention with partial NeoX-style rotary
/// (rotate_half on the first rotary_ndims dims of each head), exact GELU MLP, parallel or sequential residual.
/// Weights are plain tensors owned (and disposed) by the layer.
/// </summary>
public sealed class NeoXLayer : IDisposable
{
    private readonly ModelConfig _c;
    private readonly Tensor _ln1W, _ln1B, _ln2W, _ln2B;
    private readonly Dense _qkv, _dense, _up, _down;
    private readonly long[] _normShape;
    private readonly double _scale;

    public int Index { get; }

    public NeoXLayer(Checkpoint ckpt, int index, ScalarType dtype, int parallelism)
    {
        _c = ckpt.Config; Index = index;
        long h = _c.HiddenSize, i = _c.IntermediateSize;
        string p = $"gpt_neox.layers.{index}.";
        var loaded = new List<Tensor>();
        var owned = new List<Dense>();
        Tensor R(string name, params long[] shape)
        {
            var t = ckpt.Read(p + name, shape, dtype).DetachFromDisposeScope();
            loaded.Add(t);
            return t;
        }
        try
        {
            _ln1W = R("input_layernorm.weight", h); _ln1B = R("input_layernorm.bias", h);
            _ln2W = R("post_attention_layernorm.weight", h); _ln2B = R("post_attention_layernorm.bias", h);
            loaded.Clear();
            _qkv = new Dense(R("attention.query_key_value.weight", 3 * h, h), R("attention.query_key_value.bias", 3 * h), parallelism);
            loaded.Clear(); owned.Add(_qkv);
            _dense = new Dense(R("attention.dense.weight", h, h), R("attention.dense.bias", h), parallelism);
            loaded.Clear(); owned.Add(_dense);
            _up = new Dense(R("mlp.dense_h_to_4h.weight", i, h), R("mlp.dense_h_to_4h.bias", i), parallelism);
            loaded.Clear(); owned.Add(_up);
            _down = new Dense(R("mlp.dense_4h_to_h.weight", h, i), R("mlp.dense_4h_to_h.bias", h), parallelism);
            loaded.Clear(); owned.Add(_down);
        }
        catch
        {
            foreach (var t in loaded) t.Dispose();
            foreach (var d in owned) d.Dispose();
            _ln1W?.Dispose(); _ln1B?.Dispose(); _ln2W?.Dispose(); _ln2B?.Dispose();
            throw;
        }
        _normShape = [h];
        _scale = 1.0 / Math.Sqrt(_c.HeadDim);
    }

    /// <summary>Bytes of this layer's weights.</summary>
    public long WeightBytes => new[] { _ln1W, _ln1B, _ln2W, _ln2B }.Sum(t => t.NumberOfElements * t.ElementSize)
        + _qkv.Bytes + _dense.Bytes + _up.Bytes + _down.Bytes;

    /// <summary>x: [B, T, H] → [B, T, H]. Appends this layer's k/v to the cache at the cache's current length.</summary>
    public Tensor Forward(Tensor x, Rotary rope, int layerSlot, KvCache cache, Tensor? mask)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1];
        int nh = _c.NumHeads, hd = _c.HeadDim;

        var h1 = F.layer_norm(x, _normShape, _ln1W, _ln1B, _c.LayerNormEps);
        // [B,T,3H] → [B,T,heads,3·hd]: GPT-NeoX packs [q,k,v] per head.
        var qkv = _qkv.Forward(h1).view(b, t, nh, 3, hd);
        rope.RotateQueriesAndKeysInPlace(qkv, cache.Length); // q and k of every head in one pass, on the fresh buffer
        var q = qkv.select(3, 0).permute(0, 2, 1, 3);
        var k = qkv.select(3, 1).permute(0, 2, 1, 3);
        var v = qkv.select(3, 2).permute(0, 2, 1, 3);

        var (keys, values) = cache.Append(layerSlot, k, v);
        Tensor attn = mask is null
            ? F.scaled_dot_product_attention(q, keys, values, null, 0.0, false)
            : F.scaled_dot_product_attention(q, keys, values, mask, 0.0, false);
        keys.Dispose(); values.Dispose();
        attn = attn.permute(0, 2, 1, 3).reshape(b, t, nh * hd);
        attn = _dense.Forward(attn);

        Tensor result;
        if (_c.UseParallelResidual)
        {
            var h2 = F.layer_norm(x, _normShape, _ln2W, _ln2B, _c.LayerNormEps);
            var mlp = Mlp(h2);
            result = x + attn + mlp;
        }
        else
        {
            var mid = x + attn;
            var h2 = F.layer_norm(mid, _normShape, _ln2W, _ln2B, _c.LayerNormEps);
            result = mid + Mlp(h2);
        }
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// One step of many sequences at once. x: [N, H], the new rows of every sequence in the batch back to back.
    /// The dense parts (LayerNorms, QKV, dense, MLP) run over all N rows together, so each weight is read once;
    /// the new keys/values go to the sequences' pool slots (<see cref="BatchPlan.Slots"/>) and attention runs per
    /// sequence against its own positions only, so no sequence sees another's. Returns [N, H].
    /// </summary>
    internal Tensor ForwardBatch(Tensor x, Rotary rope, int layerSlot, KvBlockPool pool, BatchPlan plan)
    {
        using var scope = NewDisposeScope();
        long n = x.shape[0];
        int nh = _c.NumHeads, hd = _c.HeadDim;

        var h1 = F.layer_norm(x, _normShape, _ln1W, _ln1B, _c.LayerNormEps);
        var qkv = _qkv.Forward(h1).view(n, nh, 3, hd);
        rope.RotateQueriesAndKeysInPlaceAt(qkv, plan.Positions); // q and k of every head in one pass, on the fresh buffer
        var q = qkv.select(2, 0);
        var k = qkv.select(2, 1);
        var v = qkv.select(2, 2);
        var keyStore = pool.Keys(layerSlot);
        var valueStore = pool.Values(layerSlot);
        keyStore.index_copy_(0, plan.Slots, k);
        valueStore.index_copy_(0, plan.Slots, v);

        var attn = empty([n, nh, hd], x.dtype);
        if (plan.DecodeRows is { } rows)
        {
            // Single-position steps: one padded gather and one attention call for all of them.
            long m = rows.shape[0], len = plan.DecodeLength;
            bool allRows = m == n;                                                                // only decodes in this batch
            var qd = (allRows ? q : q.index_select(0, rows)).unsqueeze(2);                        // [m, nh, 1, hd]
            var kd = Gather(keyStore, plan.DecodeSlots, plan.DecodeStart ?? 0, len).view(m, len, nh, hd).permute(0, 2, 1, 3);
            var vd = Gather(valueStore, plan.DecodeSlots, plan.DecodeStart ?? 0, len).view(m, len, nh, hd).permute(0, 2, 1, 3);
            var od = F.scaled_dot_product_attention(qd, kd, vd, plan.DecodeMask, 0.0, false);   // [m, nh, 1, hd]
            if (allRows) attn.copy_(od.squeeze(2));
            else attn.index_copy_(0, rows, od.squeeze(2));
        }
        foreach (var p in plan.Chunks)
        {
            // Multi-position steps (prefill chunks): causal attention over the sequence's positions so far.
            var qp = q.narrow(0, p.Offset, p.Rows).permute(1, 0, 2).unsqueeze(0);                // [1, nh, t, hd]
            var kp = Gather(keyStore, p.Slots, p.Start, p.Length).permute(1, 0, 2).unsqueeze(0); // [1, nh, L, hd]
            var vp = Gather(valueStore, p.Slots, p.Start, p.Length).permute(1, 0, 2).unsqueeze(0);
            var op = F.scaled_dot_product_attention(qp, kp, vp, p.Mask, 0.0, false);             // [1, nh, t, hd]
            attn.narrow(0, p.Offset, p.Rows).copy_(op.squeeze(0).permute(1, 0, 2));
        }
        var a = _dense.Forward(attn.view(n, nh * hd));

        Tensor result;
        if (_c.UseParallelResidual)
        {
            var h2 = F.layer_norm(x, _normShape, _ln2W, _ln2B, _c.LayerNormEps);
            result = x + a + Mlp(h2);
        }
        else
        {
            var mid = x + a;
            var h2 = F.layer_norm(mid, _normShape, _ln2W, _ln2B, _c.LayerNormEps);
            result = mid + Mlp(h2);
        }
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>Rows of a pool's storage: gathered by slot, or a view of the contiguous range [start, start+length).</summary>
    private static Tensor Gather(Tensor store, Tensor? slots, long start, long length) =>
        slots is null ? store.narrow(0, start, length) : store.index_select(0, slots);

    private Tensor Mlp(Tensor h) => _down.Forward(F.gelu(_up.Forward(h)));

    public void Dispose()
    {
        foreach (var t in new[] { _ln1W, _ln1B, _ln2W, _ln2B }) t.Dispose();
        _qkv.Dispose(); _dense.Dispose(); _up.Dispose(); _down.Dispose();
    }
}

/// <summary>Precomputed NeoX rotary tables (f32 math as HF does it), applied to the first rotary_ndims dims.</summary>
public sealed class Rotary : IDisposable
{
    private readonly Tensor _cos, _sin; // [maxPos, rd] in the compute dtype
    private readonly int _rd;

    public Rotary(ModelConfig c, int maxPositions, ScalarType dtype, Device? device = null)
    {
        _rd = c.RotaryDims;
        using var scope = NewDisposeScope();
        var invFreq = 1.0f / pow(c.RotaryBase, arange(0, _rd, 2, ScalarType.Int64).to_type(ScalarType.Float32) / _rd);
        var pos = arange(0, maxPositions, 1, ScalarType.Int64).to_type(ScalarType.Float32);
        var freqs = outer(pos, invFreq);
        var emb = cat([freqs, freqs], 1);
        _cos = emb.cos().to_type(dtype).to(device ?? CPU).MoveToOuterDisposeScope().DetachFromDisposeScope();
        _sin = emb.sin().to_type(dtype).to(device ?? CPU).MoveToOuterDisposeScope().DetachFromDisposeScope();
    }

    /// <summary>
    /// Rotates q and k in place. qkv: [B, T, heads, 3, hd] (GPT-NeoX's per-head [q, k, v] packing) at positions
    /// [start, start+T). Same arithmetic as rotate_half: x1' = x1·cos − x2·sin, x2' = x2·cos + x1·sin over the first
    /// rotary_ndims dims (cos/sin repeat across the two halves).
    /// </summary>
    public void RotateQueriesAndKeysInPlace(Tensor qkv, int start)
    {
        if (_rd == 0) return;
        long t = qkv.shape[1];
        if (start + t > _cos.shape[0])
            throw new InvalidOperationException($"position {start + t} exceeds the model's context of {_cos.shape[0]}");
        using var scope = NewDisposeScope();
        int half = _rd / 2;
        var cos = _cos.narrow(0, start, t).narrow(1, 0, half).view(1, t, 1, 1, half);
        var sin = _sin.narrow(0, start, t).narrow(1, 0, half).view(1, t, 1, 1, half);
        RotateHalvesInPlace(qkv.narrow(3, 0, 2), cos, sin, half);
    }

    /// <summary>As <see cref="RotateQueriesAndKeysInPlace"/> for rows at arbitrary positions: qkv [N, heads, 3, hd], positions int64 [N].</summary>
    public void RotateQueriesAndKeysInPlaceAt(Tensor qkv, Tensor positions)
    {
        if (_rd == 0) return;
        using var scope = NewDisposeScope();
        int half = _rd / 2;
        long n = qkv.shape[0];
        var cos = _cos.index_select(0, positions).narrow(1, 0, half).view(n, 1, 1, half);
        var sin = _sin.index_select(0, positions).narrow(1, 0, half).view(n, 1, 1, half);
        RotateHalvesInPlace(qkv.narrow(2, 0, 2), cos, sin, half);
    }

    /// <summary>qk: q and k side by side, head_dim last; cos/sin broadcast to its leading dims.</summary>
    private static void RotateHalvesInPlace(Tensor qk, Tensor cos, Tensor sin, int half)
    {
        int last = (int)qk.dim() - 1;
        var x1 = qk.narrow(last, 0, half);
        var x2 = qk.narrow(last, half, half);
        var n1 = x1 * cos - x2 * sin;
        var n2 = x2 * cos + x1 * sin;
        x1.copy_(n1);
        x2.copy_(n2);
    }

    public void Dispose() { _cos.Dispose(); _sin.Dispose(); }
}
