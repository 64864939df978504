using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Swarm.Model;

/// <summary>
/// Runs a batch of decodes (one new position per sequence, a few sequences) through a stage's layers in managed code on
/// plain memory: LayerNorms, rotary, attention and GELU by <see cref="DecodeKernels"/>, the matrices by the layers' own
/// GEMV kernels (<see cref="LinearWeights"/>), keys and values read and written in the stage's <see cref="KvBlockPool"/>.
/// Same weights, same pool, same arithmetic as the libtorch path of <see cref="StageModel.ForwardBatch"/>, in f32 — but
/// without the libtorch path's few dozen small calls per layer (and their bf16 conversions), whose per-call cost adds
/// to every token: batch-1 decode of pythia-160m ran 1.09× (f32), 1.18× (bf16) and 1.33× (int8) faster than through
/// libtorch in one <c>swarm bench local</c> run. A layer with a parallel residual (every Pythia) is three forks of the
/// cores (<see cref="DecodeFork"/>): q/k/v with the MLP's first product and its GELU; attention, split by (sequence, head) or, in large batches, by sequence,
/// with the MLP's second product; the attention's projection — each product adding itself to the residual where it
/// ends, so nothing but the LayerNorms runs on one core. Prefill chunks, tensor-parallel layers, other devices and
/// captured layers stay on the libtorch path.
/// Used from the stage's compute thread only.
/// </summary>
internal sealed unsafe class ManagedDecode
{
    /// <summary>
    /// Most sequences one managed step takes: a node's whole decode batch. From five rows on the products run in the
    /// register-tiled kernel (<see cref="GemmKernels"/>, AVX-512; else the GEMV kernels' L2-blocked passes), which reads each
    /// weight from memory once and runs near the FMA peak of a core (~100 GFLOP/s single-threaded on pythia-160m's f32
    /// matrices at 16 and 64 rows, against libtorch's 50–60 on two cores), so the managed step keeps the whole range.
    /// </summary>
    public const int MaxRows = 64;

    private readonly ModelConfig _c;
    private readonly DecodeLayer[] _layers;
    private readonly int _start;
    private readonly float[] _cos, _sin; // [maxPos, rd]
    private readonly int _rd;
    private readonly Tensor? _embedIn;  // [V, H] f32 or bf16
    private readonly float[]? _finalW, _finalB;
    private readonly LinearWeights? _head;
    private readonly ScalarType _dtype;
    private readonly DecodeFork _fork = new();
    private readonly Action<int, int> _attendPair, _attendSequence;
    private BatchItem[]? _items;     // the step being run
    private long[][]? _slots;        // each item's KV slots, positions 0 … its new one (from _slotBuffers)
    private long[]?[] _slotBuffers = [];
    private AttentionStep _step;     // the layer being run

    private ManagedDecode(ModelConfig c, int start, DecodeLayer[] layers, Rotary rope, Tensor? embedIn, Tensor? finalW, Tensor? finalB,
        LinearWeights? head, ScalarType dtype)
    {
        _c = c; _start = start; _layers = layers; _embedIn = embedIn; _head = head; _dtype = dtype;
        (_cos, _sin) = rope.HostTables();
        _rd = rope.Dims;
        _finalW = finalW is null ? null : DecodeLayer.Host(finalW);
        _finalB = finalB is null ? null : DecodeLayer.Host(finalB);
        _attendPair = AttendPair;
        _attendSequence = AttendSequence;
    }

    /// <summary>The managed step for a stage, or null where it does not apply (split layers, other devices, no AVX2/FMA).</summary>
    public static ManagedDecode? TryCreate(ModelConfig c, int start, IReadOnlyList<NeoXLayer> layers, Rotary rope, Tensor? embedIn,
        Tensor? finalW, Tensor? finalB, LinearWeights? head, ScalarType dtype)
    {
        if (!GemvKernels.IsSupported || dtype is not (ScalarType.Float32 or ScalarType.BFloat16)) return null;
        if (embedIn is not null && embedIn.device_type != DeviceType.CPU) return null;
        var views = new DecodeLayer[layers.Count];
        for (int i = 0; i < views.Length; i++)
            if ((views[i] = layers[i].DecodeWeights()!) is null) return null;
        return new ManagedDecode(c, start, views, rope, embedIn, finalW, finalB, head, dtype);
    }

    /// <summary>True when every item is a single new position that wants what this step returns.</summary>
    public static bool Takes(IReadOnlyList<BatchItem> items, int[] rows, bool last)
    {
        if (items.Count == 0 || items.Count > MaxRows) return false;
        for (int i = 0; i < items.Count; i++)
            if (rows[i] != 1 || items[i].CaptureLayers is { Count: > 0 } || (last && !items[i].WantLogits)) return false;
        return true;
    }

    /// <summary>
    /// Layers [<paramref name="from"/>, <paramref name="to"/>) for items that each bring one position (see <see cref="Takes"/>):
    /// results as <see cref="StageModel.ForwardBatch"/> returns them, made in the caller's dispose scope. Advances each
    /// item's KV length by one.
    /// </summary>
    public Tensor?[] Run(IReadOnlyList<BatchItem> items, KvBlockPool pool, int from, int to)
    {
        int n = items.Count, h = _c.HiddenSize;
        var batch = items.ToArray();
        int maxLength = items.Max(it => it.Kv.Length + 1);
        using var buffers = new DecodeBuffers(n, h, _c.IntermediateSize, DecodeFork.Parts, (AttendsBySequence(n) ? _c.NumHeads : 1) * maxLength);
        _items = batch;
        _slots = Slots(batch, pool.BlockSize);
        try
        {
            for (int r = 0; r < n; r++) LoadInput(items[r].Input, from, buffers.X + (long)r * h);
            for (int i = from - _start; i < to - _start; i++) Layer(_layers[i], pool, i, buffers);
        }
        finally { _items = null; _slots = null; }
        foreach (var it in batch) it.Kv.Length += 1;
        return to == _c.NumLayers ? Logits(buffers, batch) : Hidden(buffers, n);
    }

    /// <summary>
    /// Each item's KV slots for positions 0 … its new one, in arrays kept from step to step (grown when a sequence
    /// outgrows them) rather than new ones every step.
    /// </summary>
    private long[][] Slots(BatchItem[] items, int blockSize)
    {
        if (_slotBuffers.Length < items.Length) Array.Resize(ref _slotBuffers, items.Length);
        for (int r = 0; r < items.Length; r++)
        {
            var kv = items[r].Kv;
            int length = kv.Length + 1;
            ref long[]? slots = ref _slotBuffers[r];
            if (slots is null || slots.Length < length) slots = new long[Math.Max(length, 2 * (slots?.Length ?? 0))];
            for (int p = 0; p < length; p++) slots[p] = (long)kv.Blocks[p / blockSize] * blockSize + p % blockSize;
        }
        return _slotBuffers!;
    }

    private void LoadInput(Tensor input, int from, float* x)
    {
        int h = _c.HiddenSize;
        if (from == 0)
        {
            long id = input.device_type == DeviceType.CPU && input.is_contiguous() ? input.data<long>()[0] : input.reshape(-1)[0].item<long>();
            if (id < 0 || id >= _c.VocabSize) throw new ArgumentOutOfRangeException(nameof(input), $"token id {id} is outside the vocabulary of {_c.VocabSize}");
            Widen(_embedIn!, id * h, x, h);
            return;
        }
        using var f = input.reshape(h).to_type(ScalarType.Float32).cpu().contiguous();
        new Span<float>((void*)LinearWeights.DataPointerOf(f), h).CopyTo(new Span<float>(x, h));
    }

    /// <summary>n values of an f32 or bf16 CPU tensor from element <paramref name="offset"/> as f32.</summary>
    private static void Widen(Tensor t, long offset, float* y, int n)
    {
        nint p = LinearWeights.DataPointerOf(t);
        if (t.dtype == ScalarType.Float32) new Span<float>((float*)p + offset, n).CopyTo(new Span<float>(y, n));
        else for (int i = 0; i < n; i++) y[i] = DecodeKernels.Bf16ToF32(((ushort*)p)[offset + i]);
    }

    private void Layer(DecodeLayer w, KvBlockPool pool, int slot, DecodeBuffers b)
    {
        int n = b.Rows, h = _c.HiddenSize, inter = _c.IntermediateSize;
        float eps = (float)_c.LayerNormEps;
        BeginAttention(pool, slot, b);
        fixed (float* ln1W = w.Ln1W, ln1B = w.Ln1B, ln2W = w.Ln2W, ln2B = w.Ln2B)
        {
            for (int r = 0; r < n; r++) DecodeKernels.LayerNorm(b.X + (long)r * h, h, ln1W, ln1B, eps, b.Norm + (long)r * h);
            if (_c.UseParallelResidual)
            {
                // x + attn(ln1(x)) + mlp(ln2(x)): three forks — q/k/v with the MLP's first product, attention with its
                // second, then the attention's projection; each product's chunk adds itself to x where it ends.
                for (int r = 0; r < n; r++) DecodeKernels.LayerNorm(b.X + (long)r * h, h, ln2W, ln2B, eps, b.Norm2 + (long)r * h);
                Fork().AddMatvec(w.Qkv, b.Norm, n, b.Qkv);
                _fork.AddMatvec(w.Up, b.Norm2, n, b.Up, DecodeEpilogue.Gelu);
                _fork.Run();
                AddAttention(n);
                _fork.AddMatvec(w.Down, b.Up, n, b.MlpOut, DecodeEpilogue.Residual, b.X);
                _fork.Run();
                Fork().AddMatvec(w.Dense, b.Attn, n, b.AttnOut, DecodeEpilogue.Residual, b.X);
                _fork.Run();
            }
            else
            {
                Fork().AddMatvec(w.Qkv, b.Norm, n, b.Qkv);
                _fork.Run();
                AddAttention(n);
                _fork.Run();
                Fork().AddMatvec(w.Dense, b.Attn, n, b.AttnOut, DecodeEpilogue.Residual, b.X);
                _fork.Run();
                for (int r = 0; r < n; r++) DecodeKernels.LayerNorm(b.X + (long)r * h, h, ln2W, ln2B, eps, b.Norm + (long)r * h);
                Fork().AddMatvec(w.Up, b.Norm, n, b.Up, DecodeEpilogue.Gelu);
                _fork.Run();
                Fork().AddMatvec(w.Down, b.Up, n, b.MlpOut, DecodeEpilogue.Residual, b.X);
                _fork.Run();
            }
        }
        _step = default;
    }

    /// <summary>Starts a fork with the layer's attention for <paramref name="rows"/> sequences.</summary>
    private void AddAttention(int rows)
    {
        if (AttendsBySequence(rows)) Fork().AddAttention(rows, _attendSequence);
        else Fork().AddAttention(rows * _c.NumHeads, _attendPair);
    }

    private DecodeFork Fork()
    {
        _fork.Clear();
        return _fork;
    }

    /// <summary>What <see cref="AttendPair"/> reads for the layer being run.</summary>
    private struct AttentionStep
    {
        public byte* Keys, Values;
        public DecodeBuffers? Buffers;
        public BatchItem[]? Items;
        public long[][]? Slots;
    }

    private void BeginAttention(KvBlockPool pool, int layerSlot, DecodeBuffers b) => _step = new AttentionStep
    {
        Keys = (byte*)LinearWeights.DataPointerOf(pool.Keys(layerSlot)),
        Values = (byte*)LinearWeights.DataPointerOf(pool.Values(layerSlot)),
        Buffers = b, Items = _items, Slots = _slots,
    };

    /// <summary>
    /// Whether a layer's attention is split by sequence (all its heads in one piece, read row by row from the KV store:
    /// <see cref="DecodeKernels.AttendHeads{TStore}"/>) rather than by (sequence, head) pair: when the sequences alone
    /// keep every core busy to the end of the fork. Both give the same bits.
    /// </summary>
    private static bool AttendsBySequence(int rows) => rows >= 4 * DecodeFork.Parts;

    /// <summary>
    /// One (sequence, head) pair of the layer's attention: rotary on its query and new key, the new key and value into the
    /// sequence's KV slot, then its query over all its positions. Pairs touch disjoint slots and rows, so any core runs any.
    /// </summary>
    private void AttendPair(int pair, int part)
    {
        int heads = _c.NumHeads, hd = _c.HeadDim, h = _c.HiddenSize;
        int r = pair / heads, head = pair % heads;
        var b = _step.Buffers!;
        long[] slots = _step.Slots![r];
        int pos = _step.Items![r].Kv.Length;
        float* q = StoreNewPosition(r, head, pos, slots);
        float* scores = b.Scores + (long)part * b.ScoresPerPart, o = b.Attn + (long)r * h + head * hd;
        long headOffset = (long)head * hd * (_dtype == ScalarType.Float32 ? 4 : 2);
        byte* kh = _step.Keys + headOffset, vh = _step.Values + headOffset;
        fixed (long* s = slots)
        {
            if (_dtype == ScalarType.Float32) DecodeKernels.Attend<F32KvStore>(q, hd, kh, vh, s, pos + 1, h, Scale, scores, o);
            else DecodeKernels.Attend<Bf16KvStore>(q, hd, kh, vh, s, pos + 1, h, Scale, scores, o);
        }
    }

    /// <summary>All heads of one sequence's attention (see <see cref="AttendsBySequence"/>).</summary>
    private void AttendSequence(int r, int part)
    {
        int heads = _c.NumHeads, hd = _c.HeadDim, h = _c.HiddenSize;
        var b = _step.Buffers!;
        long[] slots = _step.Slots![r];
        int pos = _step.Items![r].Kv.Length;
        for (int head = 0; head < heads; head++) StoreNewPosition(r, head, pos, slots);
        float* q = b.Qkv + (long)r * 3 * h, scores = b.Scores + (long)part * b.ScoresPerPart, o = b.Attn + (long)r * h;
        fixed (long* s = slots)
        {
            if (_dtype == ScalarType.Float32) DecodeKernels.AttendHeads<F32KvStore>(q, 3 * hd, heads, hd, _step.Keys, _step.Values, s, pos + 1, h, Scale, scores, o);
            else DecodeKernels.AttendHeads<Bf16KvStore>(q, 3 * hd, heads, hd, _step.Keys, _step.Values, s, pos + 1, h, Scale, scores, o);
        }
    }

    private float Scale => 1f / MathF.Sqrt(_c.HeadDim);

    /// <summary>Rotary on one head's query and new key of sequence r, the key and value into its KV slot; returns the query.</summary>
    private float* StoreNewPosition(int r, int head, int pos, long[] slots)
    {
        int hd = _c.HeadDim, h = _c.HiddenSize, half = _rd / 2;
        float* q = _step.Buffers!.Qkv + (long)r * 3 * h + head * 3 * hd, k = q + hd, v = k + hd;
        fixed (float* cosT = _cos, sinT = _sin)
            if (half > 0)
            {
                DecodeKernels.Rotate(q, cosT + (long)pos * _rd, sinT + (long)pos * _rd, half);
                DecodeKernels.Rotate(k, cosT + (long)pos * _rd, sinT + (long)pos * _rd, half);
            }
        long at = slots[pos] * h + head * hd;
        if (_dtype == ScalarType.Float32) { F32KvStore.Write(_step.Keys, at, k, hd); F32KvStore.Write(_step.Values, at, v, hd); }
        else { Bf16KvStore.Write(_step.Keys, at, k, hd); Bf16KvStore.Write(_step.Values, at, v, hd); }
        return q;
    }

    private Tensor?[] Logits(DecodeBuffers b, BatchItem[] items)
    {
        int h = _c.HiddenSize, n = items.Length;
        fixed (float* w = _finalW, bias = _finalB)
            for (int r = 0; r < n; r++) DecodeKernels.LayerNorm(b.X + (long)r * h, h, w, bias, (float)_c.LayerNormEps, b.Norm + (long)r * h);
        var logits = empty([n, _c.VocabSize], ScalarType.Float32);
        Fork().AddMatvec(_head!, b.Norm, n, (float*)LinearWeights.DataPointerOf(logits));
        _fork.Run();
        var results = new Tensor?[n];
        for (int r = 0; r < n; r++) results[r] = items[r].AllPositions ? logits.narrow(0, r, 1) : logits[r];
        return results;
    }

    private Tensor?[] Hidden(DecodeBuffers b, int n)
    {
        int h = _c.HiddenSize;
        var x = empty([n, h], ScalarType.Float32);
        new Span<float>(b.X, n * h).CopyTo(new Span<float>((void*)LinearWeights.DataPointerOf(x), n * h));
        if (_dtype != ScalarType.Float32) x = x.to_type(_dtype);
        var results = new Tensor?[n];
        for (int r = 0; r < n; r++) results[r] = x.narrow(0, r, 1);
        return results;
    }
}

/// <summary>The f32 scratch rows of one managed decode step, in native memory freed when the step ends.</summary>
internal sealed unsafe class DecodeBuffers : IDisposable
{
    private readonly float* _block;

    public DecodeBuffers(int rows, int hidden, int intermediate, int scoreParts, int scoresPerPart)
    {
        Rows = rows;
        ScoresPerPart = scoresPerPart;
        long h = (long)rows * hidden;
        long total = 7 * h + 3 * h /* qkv */ + (long)rows * intermediate + (long)scoreParts * scoresPerPart;
        _block = (float*)NativeMemory.AlignedAlloc((nuint)(total * sizeof(float)), 64);
        float* p = _block;
        X = p; p += h;
        Norm = p; p += h;
        Norm2 = p; p += h;
        Qkv = p; p += 3 * h;
        Attn = p; p += h;
        AttnOut = p; p += h;
        MlpOut = p; p += h;
        Up = p; p += (long)rows * intermediate;
        Scores = p;
    }

    /// <summary>Sequences in the step.</summary>
    public int Rows { get; }
    /// <summary>The hidden state of each row, [rows, H].</summary>
    public float* X { get; }
    /// <summary>LayerNorm output, [rows, H].</summary>
    public float* Norm { get; }
    /// <summary>Second LayerNorm's output with a parallel residual, [rows, H].</summary>
    public float* Norm2 { get; }
    /// <summary>Fused q/k/v projections, [rows, heads, 3, hd].</summary>
    public float* Qkv { get; }
    /// <summary>Attention output before the dense projection, [rows, H].</summary>
    public float* Attn { get; }
    /// <summary>Dense projection of the attention, [rows, H].</summary>
    public float* AttnOut { get; }
    /// <summary>MLP output, [rows, H].</summary>
    public float* MlpOut { get; }
    /// <summary>MLP hidden layer, [rows, intermediate].</summary>
    public float* Up { get; }
    /// <summary>Floats of attention scores each part of a fork has (a window per head it attends at once).</summary>
    public int ScoresPerPart { get; }
    /// <summary>Attention scores, <see cref="ScoresPerPart"/> per part of a fork.</summary>
    public float* Scores { get; }

    public void Dispose() => NativeMemory.AlignedFree(_block);
}
