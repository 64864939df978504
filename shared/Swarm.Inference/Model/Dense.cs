using static TorchSharp.torch;

namespace Swarm.Model;

/// <summary>
/// A linear layer y = x·Wᵀ + b stored the way batch-1 decode wants it. libtorch's f32 GEMV runs on one
/// thread and reads a row-major [out, in] weight at about half the machine's bandwidth, while x·W' with W'
/// = Wᵀ stored [in, out] streams at close to it. So the weight is kept transposed, and for a few rows it is
/// split by output columns into one slice per worker so that every core streams its own share; for many rows
/// (prefill, big batches) one multithreaded GEMM over the whole weight is used.
/// </summary>
public sealed class Dense : IDisposable
{
    /// <summary>Rows at or below this go through the column-parallel GEMV path.</summary>
    public const int SmallBatchRows = 8;
    /// <summary>From this many rows a very wide output is computed as Wᵀ·xᵀ (see <see cref="Forward"/>).</summary>
    public const int WideBatchRows = 16;

    private readonly Tensor[] _parts;     // output blocks: [in, out_i] blocks of Wᵀ, or [out_i, in] blocks of W when _dot
    private readonly bool _dot;           // blocks in HF layout, computed as dot products (long inputs, e.g. dense_4h_to_h)
    private readonly long[] _offsets;     // column offset of each block, plus Out
    private readonly Tensor? _bias;       // [out]
    private readonly Tensor?[] _biasParts; // views of _bias per block, so each block adds its own bias in its product

    public long In { get; }
    public long Out { get; }

    /// <summary>Takes ownership of <paramref name="weight"/> ([out, in], HF layout) and <paramref name="bias"/>.</summary>
    public Dense(Tensor weight, Tensor? bias, int parallelism)
    {
        Out = weight.shape[0]; In = weight.shape[1];
        int parts = weight.dtype == ScalarType.Float32 ? Math.Max(1, parallelism) : 1; // bf16 GEMV is already threaded
        if (parts > 1 && Out < 256 * parts) parts = 1;
        _bias = bias?.DetachFromDisposeScope();
        _parts = new Tensor[parts];
        _offsets = new long[parts + 1];
        // Orientation by shape, as measured for single-row GEMV on this kind of CPU: a long input (In ≥ 2·Out, the MLP's
        // down projection) streams fastest as dot products over W's rows; otherwise x·Wᵀ over [in, out] storage is
        // ~1.3–1.6× faster than libtorch's dot-product GEMV (qkv, dense, up, unembedding).
        _dot = In >= 2 * Out;
        long step = (Out + parts - 1) / parts;
        using (weight)
        {
            // Each block is stored contiguous: a strided column slice of one big [in, out] matrix streams at
            // about half the bandwidth (rows of 1.5 KB with gaps defeat the prefetcher). Nothing is stored twice.
            for (int i = 0; i < parts; i++)
            {
                long start = i * step, n = Math.Min(step, Out - start);
                _offsets[i] = start;
                using var rows = weight.narrow(0, start, n);
                if (_dot) _parts[i] = rows.contiguous().DetachFromDisposeScope();
                else
                {
                    using var t = rows.t();
                    _parts[i] = t.contiguous().DetachFromDisposeScope();
                }
            }
        }
        _offsets[parts] = Out;
        _biasParts = new Tensor?[parts];
        if (_bias is not null)
            for (int i = 0; i < parts; i++) _biasParts[i] = _bias.narrow(0, _offsets[i], _offsets[i + 1] - _offsets[i]).DetachFromDisposeScope();
    }

    /// <summary>Weight bytes.</summary>
    public long Bytes => _parts.Sum(p => p.NumberOfElements * p.ElementSize) + (_bias is null ? 0 : _bias.NumberOfElements * _bias.ElementSize);

    public Tensor Forward(Tensor x)
    {
        var shape = x.shape;
        long rows = x.NumberOfElements / In;
        using var scope = NewDisposeScope();
        var x2 = x.reshape(rows, In);
        Tensor y;
        bool wide = !_dot && rows >= WideBatchRows && Out >= 16 * In;
        if (_parts.Length == 1)
        {
            y = _dot ? nn.functional.linear(x2, _parts[0], _bias)
                : wide ? WideProduct(x2, _parts[0]) : _bias is null ? x2.matmul(_parts[0]) : addmm(_bias, x2, _parts[0], 1f, 1f);
            if (wide && _bias is not null) y.add_(_bias);
        }
        else
        {
            y = empty([rows, Out], x.dtype, x.device);
            var input = x2;
            var output = y;
            if (rows <= SmallBatchRows)
            {
                // Few rows: memory-bound GEMV; every core streams its own block.
                ComputePool.Shared.Run(_parts.Length, i => Product(input, i, output, false));
            }
            else
            {
                // Many rows: compute-bound GEMM; libtorch threads each block in turn.
                for (int i = 0; i < _parts.Length; i++) Product(input, i, output, wide);
            }
        }
        shape[^1] = Out;
        return y.view(shape).MoveToOuterDisposeScope();
    }

    private void Product(Tensor input, int i, Tensor output, bool wide)
    {
        var b = _biasParts[i];
        using var r = _dot ? nn.functional.linear(input, _parts[i], b)
            : wide ? WideProduct(input, _parts[i]) : b is null ? input.matmul(_parts[i]) : addmm(b, input, _parts[i], 1f, 1f);
        using var dst = output.narrow(1, _offsets[i], _offsets[i + 1] - _offsets[i]);
        dst.copy_(r);
        if (wide && b is not null) dst.add_(b);
    }

    /// <summary>
    /// A very wide output (the unembedding) over a batch of rows: libtorch's CPU BLAS computes Wᵀ·xᵀ on the
    /// [in, out] storage about 1.5–2× faster than x·W (measured at 16 and 64 rows; a wash for the layers).
    /// </summary>
    private static Tensor WideProduct(Tensor x2, Tensor wt)
    {
        using var xt = x2.t();
        using var wv = wt.t();
        using var yt = wv.matmul(xt);
        return yt.t().contiguous();
    }

    public void Dispose()
    {
        foreach (var b in _biasParts) b?.Dispose();
        _bias?.Dispose();
        foreach (var p in _parts) p.Dispose();
    }
}
