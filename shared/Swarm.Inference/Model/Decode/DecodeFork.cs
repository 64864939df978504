namespace Swarm.Model;

/// <summary>What a matrix product of a <see cref="DecodeFork"/> does to each finished chunk of its output.</summary>
internal enum DecodeEpilogue
{
    /// <summary>Nothing.</summary>
    None,
    /// <summary>y ← GELU(y) over the chunk's outputs.</summary>
    Gelu,
    /// <summary>residual[b, r0..r1) += y[b, r0..r1) for every input row b.</summary>
    Residual,
}

/// <summary>
/// One fork-join of a managed decode step: several independent pieces of work — matrix products split into chunks of
/// output rows, and attention split into (sequence, head) pairs — that the cores of <see cref="ComputePool"/> take in turn
/// from a shared counter until none is left. Taking chunks in turn (rather than a fixed half each) keeps both cores busy
/// to the end of the fork when one of them is slowed by other work on the machine, and one fork for everything that can
/// run at once (q/k/v with the MLP's first product; attention with the MLP's second) halves the joins of a layer. The
/// element-wise work that follows a product (GELU, the residual sum) runs on the chunk that made it, on whichever core.
/// </summary>
/// <remarks>Reused for every fork of a step (no allocation per fork); used from the stage's compute thread only.</remarks>
internal sealed unsafe class DecodeFork
{
    /// <summary>
    /// Fewest bytes of weights in a chunk of a product of a few input rows. Chunks are otherwise sized so each core takes
    /// about <see cref="ChunksPerPart"/> of every product: enough to even out the cores' ends, few enough that taking a
    /// chunk (one contended atomic) and restarting the prefetcher on it cost nothing measurable.
    /// </summary>
    private const int MinChunkBytes = 64 * 1024;
    private const int ChunksPerPart = 8;

    private readonly Matvec[] _matvecs = new Matvec[4];
    private readonly int[] _firstChunk = new int[5]; // chunk index where each product starts; [count] = end of products
    private readonly Action<int> _body;
    private int _count;
    private int _pairs;
    private Action<int, int>? _attend;
    private readonly int[] _next = new int[32]; // the chunk counter at [Counter]: a cache line of its own, away from the fields both cores read
    private const int Counter = 16;

    public DecodeFork() => _body = RunPart;

    private readonly short[]?[] _quantized = new short[]?[4]; // int8 products' activations, pinned, one per product
    private readonly float[]?[] _blockScales = new float[]?[4];

    private struct Matvec
    {
        public LinearWeights W;
        public Int8Linear? Int8;  // set when the activations were quantized for the integer kernel
        public Int8Activations Quantized;
        public float* X, Y, Residual;
        public int Rows, ChunkRows;
        public DecodeEpilogue Epilogue;
    }

    /// <summary>Starts an empty fork.</summary>
    public void Clear()
    {
        _count = 0;
        _pairs = 0;
        _attend = null;
    }

    /// <summary>
    /// Adds y = x·Wᵀ + b for <paramref name="rows"/> input rows (x: [rows, In], y: [rows, Out], f32), then
    /// <paramref name="epilogue"/> on each chunk (<paramref name="residual"/>: [rows, Out]).
    /// </summary>
    public void AddMatvec(LinearWeights w, float* x, int rows, float* y, DecodeEpilogue epilogue = DecodeEpilogue.None,
        float* residual = null)
    {
        long rowBytes = w.In * w.WeightElementSize;
        int chunkRows = rows <= 4
            ? (int)Math.Max(Math.Max(16, MinChunkBytes / rowBytes), w.Out / (ChunksPerPart * Parts) + 15) & ~15
            : GemvKernels.BlockRows((int)w.In, w.WeightElementSize); // more rows: one L2 block through every row (see GemvKernels)
        _matvecs[_count] = new Matvec { W = w, X = x, Y = y, Rows = rows, ChunkRows = chunkRows, Epilogue = epilogue, Residual = residual };
        if (w is Int8Linear int8 && Int8Kernels.IsSupported)
        {
            int k = (int)w.In;
            var values = Pinned(ref _quantized[_count], rows * k);
            var scales = Pinned(ref _blockScales[_count], rows * Int8Kernels.Blocks(k));
            fixed (short* q = values)
            fixed (float* s = scales) // pinned arrays: the addresses stay valid after the fixed block
                _matvecs[_count].Quantized = Int8Kernels.Quantize(x, rows, k, q, s);
            _matvecs[_count].Int8 = int8;
        }
        _firstChunk[_count + 1] = _firstChunk[_count] + (int)((w.Out + chunkRows - 1) / chunkRows);
        _count++;
    }

    private static T[] Pinned<T>(ref T[]? array, int length) where T : unmanaged
    {
        if (array is null || array.Length < length) array = GC.AllocateUninitializedArray<T>(length, pinned: true);
        return array;
    }

    /// <summary>
    /// Adds <paramref name="pairs"/> attention pairs: attend(pair, part) for each, where part (0 … parts−1) names the core's
    /// scratch. Pairs are taken before any product's chunks (they are the larger pieces).
    /// </summary>
    public void AddAttention(int pairs, Action<int, int> attend)
    {
        _pairs = pairs;
        _attend = attend;
    }

    /// <summary>Parts a fork is run in: one per core of the pool.</summary>
    public static int Parts => ComputePool.Shared.Workers + 1;

    /// <summary>Runs everything added since <see cref="Clear"/> and returns when all of it is done.</summary>
    public void Run()
    {
        Volatile.Write(ref _next[Counter], 0);
        int total = _pairs + _firstChunk[_count];
        if (total == 1 || Parts == 1) RunPart(0);
        else ComputePool.Shared.Run(Math.Min(Parts, total), _body);
    }

    private void RunPart(int part)
    {
        int pairs = _pairs, end = pairs + _firstChunk[_count];
        for (int i = Interlocked.Increment(ref _next[Counter]) - 1; i < end; i = Interlocked.Increment(ref _next[Counter]) - 1)
        {
            if (i < pairs) { _attend!(i, part); continue; }
            int c = i - pairs, m = 0;
            while (c >= _firstChunk[m + 1]) m++;
            RunChunk(ref _matvecs[m], c - _firstChunk[m]);
        }
    }

    private static void RunChunk(ref Matvec m, int chunk)
    {
        int outRows = (int)m.W.Out;
        int r0 = chunk * m.ChunkRows, r1 = Math.Min(outRows, r0 + m.ChunkRows), n = r1 - r0;
        if (m.Int8 is not null) m.Int8.MultiplyRows(m.Quantized, r0, r1, m.Y);
        else m.W.MultiplyRows(m.X, m.Rows, r0, r1, m.Y);
        for (int b = 0; b < m.Rows; b++)
        {
            float* y = m.Y + (long)b * outRows + r0;
            switch (m.Epilogue)
            {
                case DecodeEpilogue.Gelu:
                    DecodeKernels.GeluInPlace(y, n);
                    break;
                case DecodeEpilogue.Residual:
                    DecodeKernels.AddInPlace(m.Residual + (long)b * outRows + r0, y, n);
                    break;
            }
        }
    }
}
