using static TorchSharp.torch;

namespace Swarm.Model;

/// <summary>
/// The positions one sequence (session) holds in a <see cref="KvBlockPool"/>: its block table and length.
/// Created by <see cref="KvBlockPool.NewSequence"/>; blocks go back to the pool on <see cref="KvBlockPool.Release"/>.
/// </summary>
public sealed class KvSequence
{
    internal readonly List<int> Blocks = [];

    internal KvSequence(KvBlockPool pool) => Pool = pool;

    internal KvBlockPool Pool { get; }

    /// <summary>Tokens cached (the position of the next token).</summary>
    public int Length { get; internal set; }

    /// <summary>Blocks held (≥ ⌈Length / block size⌉ once reserved).</summary>
    public int BlockCount => Blocks.Count;

    /// <summary>Tokens the held blocks can take without allocating.</summary>
    public int ReservedTokens => Blocks.Count * Pool.BlockSize;

    /// <summary>
    /// First slot when the sequence's blocks are consecutive (then positions 0 … Length−1 are one contiguous range of
    /// the storage and attention can read a view instead of gathering); null otherwise.
    /// </summary>
    public long? ContiguousStart
    {
        get
        {
            for (int i = 1; i < Blocks.Count; i++)
                if (Blocks[i] != Blocks[0] + i) return null;
            return Blocks.Count == 0 ? null : (long)Blocks[0] * Pool.BlockSize;
        }
    }

    /// <summary>Pool slot (row of the per-layer storage) of position <paramref name="position"/>.</summary>
    public long Slot(int position) => (long)Blocks[position / Pool.BlockSize] * Pool.BlockSize + position % Pool.BlockSize;
}

/// <summary>
/// Paged KV storage of one stage shared by many sequences: fixed-size blocks of <see cref="BlockSize"/>
/// positions (keys and values of every hosted layer) handed out from a pool of <see cref="TotalBlocks"/>
/// (sized from the node's memory budget). A sequence grows block by block and returns its blocks when it
/// ends, so memory use follows the tokens actually held and a full pool is a condition the scheduler can
/// wait on, not an out-of-memory crash.
/// </summary>
/// <remarks>
/// Per layer, keys and values are one tensor each of [slots, heads, head_dim] (slot = block·BlockSize +
/// offset): new positions of a whole batch are written with one index_copy_, and a sequence's positions are
/// gathered with one index_select. The storage is allocated lazily and grows by doubling up to
/// TotalBlocks (the lowest free block ids are reused first, so it stays compact); it never shrinks.
/// Not thread-safe: the compute thread owns it.
/// </remarks>
public sealed class KvBlockPool : IDisposable
{
    /// <summary>Positions per block unless told otherwise (16).</summary>
    public const int DefaultBlockSize = 16;

    private readonly Tensor?[] _keys, _values; // [shard · Layers + layer]
    private readonly Device[] _devices;         // per head shard
    private readonly SortedSet<int> _free = [];
    private int _nextFresh;     // ids ≥ this were never handed out
    private int _storageBlocks; // blocks the storage tensors currently hold
    private bool _disposed;

    public int BlockSize { get; }
    public int TotalBlocks { get; }
    public int Layers { get; }
    public int Heads { get; }
    public int HeadDim { get; }
    public ScalarType Dtype { get; }
    /// <summary>Head shards (tensor parallelism): shard s stores heads [s·Heads/S, (s+1)·Heads/S) on its own device.</summary>
    public int Shards => _devices.Length;

    /// <summary>Blocks held by sequences.</summary>
    public int UsedBlocks => _nextFresh - _free.Count;
    public int FreeBlocks => TotalBlocks - UsedBlocks;
    /// <summary>Bytes of storage allocated so far (grows with the peak number of blocks in use).</summary>
    public long AllocatedBytes => 2L * Layers * _storageBlocks * BlockSize * Heads * HeadDim * ElementSize(Dtype);

    /// <param name="shardDevices">One device per head shard (tensor parallelism); null: one shard on the CPU.</param>
    public KvBlockPool(int layers, int heads, int headDim, ScalarType dtype, int totalBlocks, int blockSize = DefaultBlockSize,
        IReadOnlyList<Device>? shardDevices = null)
    {
        if (totalBlocks < 1) throw new ArgumentOutOfRangeException(nameof(totalBlocks), "a KV pool needs at least one block");
        if (blockSize < 1) throw new ArgumentOutOfRangeException(nameof(blockSize), "block size must be ≥ 1");
        Layers = layers; Heads = heads; HeadDim = headDim; Dtype = dtype; TotalBlocks = totalBlocks; BlockSize = blockSize;
        _devices = shardDevices is null || shardDevices.Count == 0 ? [CPU] : shardDevices.ToArray();
        if (heads % _devices.Length != 0) throw new ArgumentException($"{heads} heads cannot be split into {_devices.Length} shards");
        _keys = new Tensor?[layers * _devices.Length];
        _values = new Tensor?[layers * _devices.Length];
    }

    /// <summary>Bytes one token costs in one layer: keys + values over all heads.</summary>
    public static long BytesPerTokenPerLayer(ModelConfig c, ScalarType dtype) => 2L * c.HiddenSize * ElementSize(dtype);

    internal static int ElementSize(ScalarType t) => t switch
    {
        ScalarType.Float32 => 4,
        ScalarType.Float16 or ScalarType.BFloat16 => 2,
        ScalarType.Float64 => 8,
        _ => throw new ArgumentException($"unsupported KV dtype {t}"),
    };

    /// <summary>Blocks needed to hold <paramref name="tokens"/> positions.</summary>
    public int BlocksFor(int tokens) => (tokens + BlockSize - 1) / BlockSize;

    /// <summary>A new, empty sequence (holds no blocks yet).</summary>
    public KvSequence NewSequence() => new(this);

    /// <summary>Blocks <paramref name="seq"/> still lacks to hold <paramref name="length"/> positions.</summary>
    public int Missing(KvSequence seq, int length) => Math.Max(0, BlocksFor(length) - seq.Blocks.Count);

    /// <summary>
    /// Makes sure <paramref name="seq"/> can hold <paramref name="length"/> positions, allocating whole blocks;
    /// allocates nothing and returns false when the pool has too few free blocks.
    /// </summary>
    public bool TryReserve(KvSequence seq, int length)
    {
        Own(seq);
        int missing = Missing(seq, length);
        if (missing == 0) return true;
        if (missing > FreeBlocks) return false;
        for (int i = 0; i < missing; i++)
        {
            int id;
            if (_free.Count > 0) { id = _free.Min; _free.Remove(id); }
            else id = _nextFresh++;
            seq.Blocks.Add(id);
        }
        EnsureStorage(seq.Blocks.Max() + 1);
        return true;
    }

    /// <summary>Forgets positions at and after <paramref name="length"/> and returns blocks no longer needed.</summary>
    public void Truncate(KvSequence seq, int length)
    {
        Own(seq);
        if (length < 0 || length > seq.Length) throw new ArgumentOutOfRangeException(nameof(length));
        seq.Length = length;
        int keep = BlocksFor(length);
        for (int i = seq.Blocks.Count - 1; i >= keep; i--)
        {
            _free.Add(seq.Blocks[i]);
            seq.Blocks.RemoveAt(i);
        }
        Compact();
    }

    /// <summary>Returns every block of <paramref name="seq"/> to the pool (its length becomes 0).</summary>
    public void Release(KvSequence seq) => Truncate(seq, 0);

    /// <summary>Per-layer key storage [slots, heads, head_dim] (owned by the pool; do not dispose).</summary>
    public Tensor Keys(int layer) => Keys(0, layer);
    /// <summary>Per-layer value storage [slots, heads, head_dim] (owned by the pool; do not dispose).</summary>
    public Tensor Values(int layer) => Values(0, layer);
    /// <summary>Key storage [slots, Heads/Shards, head_dim] of head shard <paramref name="shard"/>, on its device.</summary>
    public Tensor Keys(int shard, int layer) => _keys[shard * Layers + layer] ?? throw new InvalidOperationException("no KV block has been reserved yet");
    /// <summary>Value storage [slots, Heads/Shards, head_dim] of head shard <paramref name="shard"/>, on its device.</summary>
    public Tensor Values(int shard, int layer) => _values[shard * Layers + layer] ?? throw new InvalidOperationException("no KV block has been reserved yet");

    private void Own(KvSequence seq)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!ReferenceEquals(seq.Pool, this)) throw new ArgumentException("the sequence belongs to another KV pool", nameof(seq));
    }

    // Freed ids at the top of the fresh range go back to it, so an idle pool is exactly "nothing handed out".
    private void Compact()
    {
        while (_nextFresh > 0 && _free.Contains(_nextFresh - 1))
        {
            _free.Remove(_nextFresh - 1);
            _nextFresh--;
        }
    }

    private void EnsureStorage(int blocks)
    {
        if (blocks <= _storageBlocks) return;
        int grown = Math.Min(TotalBlocks, Math.Max(blocks, Math.Max(16, _storageBlocks * 2)));
        long rows = (long)grown * BlockSize;
        for (int s = 0; s < _devices.Length; s++)
            for (int l = 0; l < Layers; l++)
            {
                int i = s * Layers + l;
                _keys[i] = Regrow(_keys[i], rows, _devices[s]);
                _values[i] = Regrow(_values[i], rows, _devices[s]);
            }
        _storageBlocks = grown;
    }

    private Tensor Regrow(Tensor? old, long rows, Device device)
    {
        // Zero-filled so that no read, even of a slot not yet written, sees uninitialised memory (NaN).
        var t = zeros([rows, Heads / _devices.Length, HeadDim], Dtype, device).DetachFromDisposeScope();
        if (old is not null)
        {
            using (var dst = t.narrow(0, 0, old.shape[0])) dst.copy_(old);
            old.Dispose();
        }
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
