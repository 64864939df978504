using Swarm.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace Swarm.Model;

/// <summary>
/// One GPT-NeoX transformer layer: LayerNorms, fused QKV attention with partial NeoX-style rotary (rotate_half on the
/// first rotary_ndims dims of each head), exact GELU MLP, parallel or sequential residual — split by heads and MLP
/// columns into N <see cref="NeoXLayerShard"/>s (tensor parallelism). N = 1 is the ordinary layer: one shard holds every
/// weight and runs on the calling thread, with nothing to reduce. With N &gt; 1 each shard runs on its device and its own
/// worker thread; the partial outputs are moved to the first device and summed there — once for attention, once for
/// the MLP — and the row-parallel biases (dense, dense_4h_to_h) are added once, after the sums. With the parallel
/// residual both partials come from the same input, so the shards compute them in one round trip (still two separate
/// reductions); with the sequential residual the MLP needs the reduced attention first, so that takes two rounds.
/// </summary>
public sealed class NeoXLayer : IDisposable
{
    private readonly ModelConfig _c;
    private readonly NeoXLayerShard[] _shards;
    private readonly Tensor? _denseBias, _downBias; // N > 1: added once after each reduction, on the first device
    private readonly ShardWorkers? _workers;        // N > 1: one thread per shard

    /// <summary>Index of the layer in the model.</summary>
    public int Index { get; }
    /// <summary>Shards the layer is split into (1 unless tensor-parallel).</summary>
    public int Shards => _shards.Length;
    /// <summary>Device of the layer's input and output (the first shard's), where the partial outputs are summed.</summary>
    public Device Device { get; }

    /// <param name="devices">One device per shard.</param>
    /// <param name="weights">How the layer's matrices are stored (see <see cref="LinearWeights"/>).</param>
    /// <param name="parallelism">Output-row blocks of a single CPU shard's GEMVs (see <see cref="LinearWeights"/>).</param>
    /// <param name="workers">The shard threads; required when there are several devices.</param>
    internal NeoXLayer(Checkpoint ckpt, int index, WeightFormat weights, IReadOnlyList<Device> devices, int parallelism, ShardWorkers? workers)
    {
        var dtype = weights.ComputeDtype();
        _c = ckpt.Config; Index = index;
        int n = devices.Count;
        if (n > 1 && workers?.Count != n) throw new ArgumentException($"{n} shards need {n} shard workers", nameof(workers));
        _workers = n > 1 ? workers : null;
        Device = devices[0];
        int blocks = n == 1 && Device.type == DeviceType.CPU ? parallelism : 1;
        string p = $"gpt_neox.layers.{index}.";
        var shards = new List<NeoXLayerShard>();
        try
        {
            for (int s = 0; s < n; s++) shards.Add(new NeoXLayerShard(ckpt, index, weights, s, n, devices[s], blocks));
            if (n > 1)
            {
                using (var b = ckpt.Read(p + "attention.dense.bias", [_c.HiddenSize], dtype)) _denseBias = b.to(Device).DetachFromDisposeScope();
                using (var b = ckpt.Read(p + "mlp.dense_4h_to_h.bias", [_c.HiddenSize], dtype)) _downBias = b.to(Device).DetachFromDisposeScope();
            }
        }
        catch
        {
            foreach (var s in shards) s.Dispose();
            _denseBias?.Dispose();
            throw;
        }
        _shards = shards.ToArray();
    }

    /// <summary>The weights for <see cref="ManagedDecode"/>: an unsplit layer on the CPU only, else null.</summary>
    internal DecodeLayer? DecodeWeights() => _workers is null && Device.type == DeviceType.CPU ? _shards[0].DecodeWeights() : null;

    /// <summary>Bytes of shard <paramref name="shard"/>'s weights.</summary>
    public long ShardWeightBytes(int shard) => _shards[shard].WeightBytes;

    /// <summary>Device of shard <paramref name="shard"/>.</summary>
    public Device ShardDevice(int shard) => _shards[shard].Device;

    /// <summary>Bytes of all weights of the layer (every shard, plus the row-parallel biases of a split layer).</summary>
    public long WeightBytes => _shards.Sum(s => s.WeightBytes)
        + (_denseBias is null ? 0 : 2 * _denseBias.NumberOfElements * _denseBias.ElementSize);

    /// <summary>
    /// One batched step (see <see cref="StageModel.ForwardBatch"/>). x: [N, H] on <see cref="Device"/> → [N, H].
    /// <paramref name="ropes"/> and <paramref name="plans"/> hold one entry per shard, on its device.
    /// </summary>
    internal Tensor Forward(Tensor x, Rotary[] ropes, int layerSlot, KvBlockPool pool, BatchPlan[] plans)
    {
        using var scope = NewDisposeScope();
        var y = _workers is null ? Whole(x, ropes[0], layerSlot, pool, plans[0]) : Split(x, ropes, layerSlot, pool, plans);
        return y.MoveToOuterDisposeScope();
    }

    private Tensor Whole(Tensor x, Rotary rope, int layerSlot, KvBlockPool pool, BatchPlan plan)
    {
        var s = _shards[0];
        var attn = s.Attention(x, rope, layerSlot, pool, plan);
        if (_c.UseParallelResidual) return x + attn + s.Mlp(s.LayerNorm2(x));
        var mid = x + attn;
        return mid + s.Mlp(s.LayerNorm2(mid));
    }

    private Tensor Split(Tensor x, Rotary[] ropes, int layerSlot, KvBlockPool pool, BatchPlan[] plans)
    {
        int n = _shards.Length;
        var attnParts = new Tensor?[n];
        var mlpParts = new Tensor?[n];
        bool parallel = _c.UseParallelResidual;
        try
        {
            _workers!.Run(s =>
            {
                var shard = _shards[s];
                using var local = NewDisposeScope(); // worker thread's scope: results are detached and handed back
                var xs = x.to(shard.Device);
                attnParts[s] = shard.Attention(xs, ropes[s], layerSlot, pool, plans[s]).to(Device).DetachFromDisposeScope();
                if (parallel) mlpParts[s] = shard.Mlp(shard.LayerNorm2(xs)).to(Device).DetachFromDisposeScope();
            });
            var attn = Reduce(attnParts, _denseBias!);
            if (parallel) return x + attn + Reduce(mlpParts, _downBias!);
            var mid = x + attn;
            _workers.Run(s =>
            {
                var shard = _shards[s];
                using var local = NewDisposeScope();
                mlpParts[s] = shard.Mlp(shard.LayerNorm2(mid.to(shard.Device))).to(Device).DetachFromDisposeScope();
            });
            return mid + Reduce(mlpParts, _downBias!);
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
        _denseBias?.Dispose(); _downBias?.Dispose();
    }
}
