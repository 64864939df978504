using static TorchSharp.torch;

namespace Swarm.Model;

/// <summary>Precomputed NeoX rotary tables (f32 math as HF does it), applied to the first rotary_ndims dims.</summary>
internal sealed class Rotary : IDisposable
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
    /// Rotates q and k in place. qkv: [N, heads, 3, hd] (GPT-NeoX's per-head [q, k, v] packing), row i at position
    /// positions[i] (int64 [N], below the table's length). Same arithmetic as rotate_half: x1' = x1·cos − x2·sin,
    /// x2' = x2·cos + x1·sin over the first rotary_ndims dims (cos/sin repeat across the two halves).
    /// </summary>
    public void RotateQueriesAndKeysInPlace(Tensor qkv, Tensor positions)
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

    /// <summary>Rotary dims (2 · the rotated half).</summary>
    public int Dims => _rd;

    /// <summary>The tables as f32 arrays [maxPos · rd] (pinned), for the managed decode step.</summary>
    public (float[] Cos, float[] Sin) HostTables() => (DecodeLayer.Host(_cos), DecodeLayer.Host(_sin));

    public void Dispose() { _cos.Dispose(); _sin.Dispose(); }
}
