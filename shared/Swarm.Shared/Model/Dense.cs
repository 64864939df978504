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

    private readonly Tensor _wt;          // [in, out]
    private readonly Tensor? _bias;       // [out]
    private readonly Tensor[] _parts;     // column-slice views of _wt; empty when not split
    private readonly long[] _offsets;

    public long In { get; }
    public long Out { get; }

    /// <summary>Takes ownership of <paramref name="weight"/> ([out, in], HF layout) and <paramref name="bias"/>.</summary>
    public Dense(Tensor weight, Tensor? bias, int parallelism)
    {
        Out = weight.shape[0]; In = weight.shape[1];
        int parts = weight.dtype == ScalarType.Float32 ? Math.Max(1, parallelism) : 1; // bf16 GEMV is already threaded
        using (weight)
        using (var transposed = weight.t())
            _wt = transposed.contiguous().DetachFromDisposeScope();
        _bias = bias?.DetachFromDisposeScope();
        if (parts > 1 && Out >= 256 * parts)
        {
            long step = (Out + parts - 1) / parts;
            _parts = new Tensor[parts];
            _offsets = new long[parts + 1];
            for (int i = 0; i < parts; i++)
            {
                long start = i * step, n = Math.Min(step, Out - start);
                _offsets[i] = start;
                // A column slice of [in, out] is a strided matrix (row stride = out) that BLAS reads in place.
                _parts[i] = _wt.narrow(1, start, n).DetachFromDisposeScope();
            }
            _offsets[parts] = Out;
        }
        else
        {
            _parts = [];
            _offsets = [];
        }
    }

    /// <summary>Weight bytes (the slices are views: nothing is stored twice).</summary>
    public long Bytes => _wt.NumberOfElements * _wt.ElementSize + (_bias is null ? 0 : _bias.NumberOfElements * _bias.ElementSize);

    /// <summary>The weight in HF layout [out, in] (a view; caller disposes).</summary>
    public Tensor WeightView() => _wt.t();

    public Tensor Forward(Tensor x)
    {
        var shape = x.shape;
        long rows = x.NumberOfElements / In;
        using var scope = NewDisposeScope();
        var x2 = x.reshape(rows, In);
        Tensor y;
        if (_parts.Length > 1 && rows <= SmallBatchRows)
        {
            y = empty([rows, Out], x.dtype);
            var input = x2;
            var output = y;
            ComputePool.Shared.Run(_parts.Length, i =>
            {
                using var r = input.matmul(_parts[i]);
                using var dst = output.narrow(1, _offsets[i], _offsets[i + 1] - _offsets[i]);
                dst.copy_(r);
            });
            if (_bias is not null) y.add_(_bias);
        }
        else if (rows >= WideBatchRows && Out >= 16 * In)
        {
            // A very wide output (the unembedding) over a batch of rows: libtorch's CPU BLAS computes Wᵀ·xᵀ on the
            // [in, out] storage about 1.5–2× faster than x·W (measured at 16 and 64 rows; a wash for the layers).
            using var xt = x2.t();
            using var wv = _wt.t();
            using var yt = wv.matmul(xt);
            y = yt.t().contiguous();
            if (_bias is not null) y.add_(_bias);
        }
        else
        {
            y = _bias is null ? x2.matmul(_wt) : addmm(_bias, x2, _wt, 1f, 1f);
        }
        shape[^1] = Out;
        return y.view(shape).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        _wt.Dispose();
        _bias?.Dispose();
        foreach (var p in _parts) p.Dispose();
    }
}
