using static TorchSharp.torch;

namespace Swarm.Model;

/// <summary>
/// The keys and values of one session on one stage: per hosted layer, [batch, heads, capacity, head_dim]
/// buffers filled up to <see cref="Length"/>. The owner (a session) disposes it; capacity grows by doubling
/// up to the model's context, so appends are amortised copies, not a full concat per token.
/// Tensor-parallel stages shard it by heads: shard s holds heads [s·heads/S, (s+1)·heads/S) of every layer on its
/// own device (<see cref="Reserve"/> must then be called before the shards append concurrently).
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly Tensor?[] _keys, _values;
    private readonly int _heads, _headDim, _maxTokens, _layers;
    private readonly Device[] _devices; // per shard
    private bool _disposed;

    public int Batch { get; }
    public ScalarType Dtype { get; }
    /// <summary>Tokens already cached (the position of the next token).</summary>
    public int Length { get; private set; }
    public int Capacity { get; private set; }
    public int Layers => _layers;
    /// <summary>Head shards (1 unless the stage is tensor-parallel).</summary>
    public int Shards => _devices.Length;

    /// <param name="shardDevices">One device per head shard (tensor parallelism); null: one shard on the CPU.</param>
    public KvCache(int layers, int batch, int heads, int headDim, ScalarType dtype, int maxTokens, int initialCapacity = 64,
        IReadOnlyList<Device>? shardDevices = null)
    {
        _devices = shardDevices is null || shardDevices.Count == 0 ? [CPU] : shardDevices.ToArray();
        if (heads % _devices.Length != 0) throw new ArgumentException($"{heads} heads cannot be split into {_devices.Length} shards");
        _layers = layers;
        _keys = new Tensor?[layers * _devices.Length];
        _values = new Tensor?[layers * _devices.Length];
        Batch = batch; _heads = heads / _devices.Length; _headDim = headDim; Dtype = dtype; _maxTokens = maxTokens;
        Capacity = Math.Min(initialCapacity, maxTokens);
    }

    /// <summary>Makes room for positions up to <paramref name="tokens"/> (so that shards can append without growing).</summary>
    public void Reserve(int tokens)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (tokens > _maxTokens)
            throw new InvalidOperationException($"context full: {tokens} tokens exceed the limit of {_maxTokens}");
        if (tokens > Capacity) Grow(tokens);
    }

    /// <summary>Bytes one token costs in one layer: keys + values over all heads.</summary>
    public static long BytesPerTokenPerLayer(ModelConfig c, ScalarType dtype) => 2L * c.HiddenSize * ElementSize(dtype);

    /// <summary>Bytes currently allocated (capacity, not just length).</summary>
    public long AllocatedBytes => _keys.Where(k => k is not null).Sum(k => 2 * k!.NumberOfElements * k.ElementSize);

    internal static int ElementSize(ScalarType t) => t switch
    {
        ScalarType.Float32 => 4,
        ScalarType.Float16 or ScalarType.BFloat16 => 2,
        ScalarType.Float64 => 8,
        _ => throw new ArgumentException($"unsupported cache dtype {t}"),
    };

    /// <summary>
    /// Writes k, v ([batch, heads, T, head_dim]) for layer <paramref name="layer"/> at positions
    /// [Length, Length+T) and returns views of all cached keys and values so far (caller disposes the views).
    /// <see cref="Advance"/> must be called once per forward, after all layers appended.
    /// </summary>
    public (Tensor Keys, Tensor Values) Append(int layer, Tensor k, Tensor v) => Append(0, layer, k, v);

    /// <summary>
    /// <see cref="Append(int, Tensor, Tensor)"/> for head shard <paramref name="shard"/> (k, v: [batch, heads/S, T, head_dim]
    /// on the shard's device). With several shards the caller must have called <see cref="Reserve"/>: shards append
    /// from their own threads and must not regrow each other's buffers.
    /// </summary>
    public (Tensor Keys, Tensor Values) Append(int shard, int layer, Tensor k, Tensor v)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int t = (int)k.shape[2];
        int needed = Length + t;
        if (needed > _maxTokens)
            throw new InvalidOperationException($"context full: {needed} tokens exceed the limit of {_maxTokens}");
        if (needed > Capacity)
        {
            if (Shards > 1) throw new InvalidOperationException("a sharded KV cache must be reserved before the shards append");
            Grow(needed);
        }
        int i = shard * _layers + layer;
        if (_keys[i] is null)
        {
            _keys[i] = empty([Batch, _heads, Capacity, _headDim], Dtype, _devices[shard]).DetachFromDisposeScope();
            _values[i] = empty([Batch, _heads, Capacity, _headDim], Dtype, _devices[shard]).DetachFromDisposeScope();
        }
        using (var dk = _keys[i]!.narrow(2, Length, t)) dk.copy_(k);
        using (var dv = _values[i]!.narrow(2, Length, t)) dv.copy_(v);
        return (_keys[i]!.narrow(2, 0, needed), _values[i]!.narrow(2, 0, needed));
    }

    /// <summary>Bytes allocated for head shard <paramref name="shard"/>.</summary>
    public long ShardAllocatedBytes(int shard) =>
        Enumerable.Range(shard * _layers, _layers).Where(i => _keys[i] is not null).Sum(i => 2 * _keys[i]!.NumberOfElements * _keys[i]!.ElementSize);

    /// <summary>Commits <paramref name="tokens"/> appended positions.</summary>
    public void Advance(int tokens) => Length += tokens;

    /// <summary>Forgets positions at and after <paramref name="length"/> (e.g. to replay a step).</summary>
    public void Truncate(int length)
    {
        if (length < 0 || length > Length) throw new ArgumentOutOfRangeException(nameof(length));
        Length = length;
    }

    private void Grow(int needed)
    {
        int cap = Capacity;
        while (cap < needed) cap = Math.Min(Math.Max(cap * 2, 16), _maxTokens);
        for (int i = 0; i < _keys.Length; i++)
        {
            if (_keys[i] is null) continue;
            _keys[i] = Regrow(_keys[i]!, cap);
            _values[i] = Regrow(_values[i]!, cap);
        }
        Capacity = cap;
    }

    private Tensor Regrow(Tensor old, int cap)
    {
        var t = empty([Batch, _heads, cap, _headDim], Dtype, old.device).DetachFromDisposeScope();
        using (var dst = t.narrow(2, 0, Length))
        using (var src = old.narrow(2, 0, Length))
            dst.copy_(src);
        old.Dispose();
        return t;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        for (int i = 0; i < _keys.Length; i++)
        {
            _keys[i]?.Dispose(); _keys[i] = null;
            _values[i]?.Dispose(); _values[i] = null;
        }
    }
}
