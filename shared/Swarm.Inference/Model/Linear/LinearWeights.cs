using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Swarm.Model;

/// <summary>
/// A linear layer y = x·Wᵀ + b whose weight W ([out, in], HF layout) is stored in one <see cref="WeightFormat"/>. Few
/// rows (decode) go through the streaming GEMV kernels of <see cref="GemvKernels"/>, split by output rows across the
/// cores of <see cref="ComputePool"/>; many rows (prefill, large batches), other devices and CPUs without AVX2 go through
/// libtorch's GEMM on the weight in the activation dtype (converted block by block when it is stored otherwise).
/// Activations keep their dtype: the output has the input's dtype unless asked otherwise.
/// </summary>
public abstract class LinearWeights : IDisposable
{
    /// <summary>Elements of a converted weight block on the GEMM path (bounds its temporary memory to ~16 MB in bf16).</summary>
    private const long GemmBlockElements = 8L << 20;

    private readonly Tensor? _bias; // [out] f32
    private readonly nint _biasData; // its first element on the CPU, or 0
    private readonly int _parts;    // output-row blocks of the GEMV, one per core

    /// <summary>The stored weight, [out, in].</summary>
    protected Tensor Weight { get; }

    /// <summary>Address of <see cref="Weight"/>'s first element on the CPU (0 on other devices), for the GEMV kernels.</summary>
    protected nint WeightData { get; }

    /// <summary>Input features.</summary>
    public long In { get; }
    /// <summary>Output features.</summary>
    public long Out { get; }
    /// <summary>How the weight is stored.</summary>
    public abstract WeightFormat Format { get; }

    /// <summary>Rows up to which the GEMV kernels are used; above it the GEMM path.</summary>
    protected abstract int GemvMaxRows { get; }

    /// <summary>Takes ownership of <paramref name="weight"/> (already in its stored form) and <paramref name="bias"/>.</summary>
    /// <param name="parallelism">Output-row blocks the GEMV is split into (one per core; 1 for a tensor-parallel shard).</param>
    protected LinearWeights(Tensor weight, Tensor? bias, int parallelism)
    {
        Out = weight.shape[0]; In = weight.shape[1];
        using (NewDisposeScope()) // intermediates of the conversions go with it
        {
            Weight = weight.contiguous().DetachFromDisposeScope();
            _bias = bias?.to_type(ScalarType.Float32).contiguous().DetachFromDisposeScope();
        }
        if (!ReferenceEquals(Weight, weight)) weight.Dispose();
        if (bias is not null && !ReferenceEquals(_bias, bias)) bias.Dispose();
        WeightData = Weight.device_type == DeviceType.CPU ? DataPointerOf(Weight) : 0;
        _biasData = _bias is not null && _bias.device_type == DeviceType.CPU ? DataPointerOf(_bias) : 0;
        int parts = Math.Max(1, parallelism);
        _parts = Out < 256 * parts ? 1 : parts;
    }

    /// <summary>
    /// A linear layer in <paramref name="format"/> from a float weight [out, in] in HF layout (converted or quantized
    /// here) and an optional bias [out]. Takes ownership of both.
    /// </summary>
    public static LinearWeights Create(Tensor weight, Tensor? bias, WeightFormat format, int parallelism) => format switch
    {
        WeightFormat.F32 => new F32Linear(weight, bias, parallelism),
        WeightFormat.BF16 or WeightFormat.F16 => new HalfLinear(weight, bias, format, parallelism),
        WeightFormat.Int8 => Int8Linear.Quantize(weight, bias, parallelism),
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, "unknown weight format"),
    };

    /// <summary>Bytes held: the stored weight, the bias and any per-row scales.</summary>
    public virtual long Bytes => Weight.NumberOfElements * Weight.ElementSize + (_bias is null ? 0 : _bias.NumberOfElements * 4);

    /// <summary>x [.., In] → [.., Out] in <paramref name="outputDtype"/> (default: x's dtype). The input is not disposed.</summary>
    public Tensor Forward(Tensor x, ScalarType? outputDtype = null)
    {
        var shape = x.shape;
        long rows = x.NumberOfElements / In;
        var dtype = outputDtype ?? x.dtype;
        using var scope = NewDisposeScope();
        var x2 = x.reshape(rows, In);
        var y = rows <= GemvMaxRows && x.device_type == DeviceType.CPU && GemvKernels.IsSupported ? Gemv(x2, (int)rows) : Gemm(x2);
        if (y.dtype != dtype) y = y.to_type(dtype);
        shape[^1] = Out;
        return y.view(shape).MoveToOuterDisposeScope();
    }

    private unsafe Tensor Gemv(Tensor x2, int rows)
    {
        var xf = x2.to_type(ScalarType.Float32).contiguous();
        var y = empty([rows, Out], ScalarType.Float32);
        Multiply((float*)DataPointerOf(xf), rows, (float*)DataPointerOf(y));
        return y;
    }

    /// <summary>
    /// y = x·Wᵀ + b with the GEMV kernels (CPU weights, <see cref="GemvKernels.IsSupported"/>), split by output rows across
    /// the cores. x: f32 [rows, In]; y: f32 [rows, Out]. Rows above a few read the weights again per four rows.
    /// </summary>
    internal unsafe void Multiply(float* x, int rows, float* y)
    {
        if (WeightData == 0) throw new InvalidOperationException("the GEMV kernels need the weights in CPU memory");
        float* bias = (float*)_biasData;
        int outRows = (int)Out;
        if (_parts == 1) Gemv(x, rows, 0, outRows, bias, y);
        else
        {
            nint xp = (nint)x, yp = (nint)y, bp = (nint)bias;
            int step = (outRows + _parts - 1) / _parts;
            ComputePool.Shared.Run(_parts, i =>
                Gemv((float*)xp, rows, i * step, Math.Min(outRows, (i + 1) * step), (float*)bp, (float*)yp));
        }
    }

    /// <summary>
    /// Output rows [r0, r1) of y = x·Wᵀ + b on the calling thread (the caller splits the rows across cores). x: f32
    /// [rows, In]; y: f32 [rows, Out]. CPU weights and <see cref="GemvKernels.IsSupported"/> only.
    /// </summary>
    internal unsafe void MultiplyRows(float* x, int rows, int r0, int r1, float* y) =>
        Gemv(x, rows, r0, r1, (float*)_biasData, y);

    /// <summary>Address of the f32 bias on the CPU, or 0 when there is none.</summary>
    protected nint BiasData => _biasData;

    /// <summary>Bytes of one stored weight.</summary>
    internal int WeightElementSize => (int)Weight.ElementSize;

    /// <summary>Output rows [r0, r1) of y = x·Wᵀ (+ bias) for f32 x [rows, In] and f32 y [rows, Out].</summary>
    protected abstract unsafe void Gemv(float* x, int rows, int r0, int r1, float* bias, float* y);

    private Tensor Gemm(Tensor x2)
    {
        var dtype = x2.dtype;
        if (Weight.dtype == dtype) return Product(x2, Weight, _bias?.to_type(dtype));
        // Stored in another form: convert a block of rows at a time into the activation dtype.
        long step = Math.Max(1, GemmBlockElements / In);
        if (step >= Out) return Product(x2, DenseRows(0, Out, dtype), _bias?.to_type(dtype));
        var y = empty([x2.shape[0], Out], dtype, x2.device);
        for (long start = 0; start < Out; start += step)
        {
            using var block = NewDisposeScope();
            long n = Math.Min(step, Out - start);
            using var b = _bias?.narrow(0, start, n).to_type(dtype);
            y.narrow(1, start, n).copy_(Product(x2, DenseRows(start, n, dtype), b));
        }
        return y;
    }

    /// <summary>
    /// x·Wᵀ + b with libtorch. A very wide output (the unembedding) over a batch of rows runs as W·xᵀ, which libtorch's CPU
    /// BLAS computes 1.5–2× faster than x·Wᵀ at 16–64 rows.
    /// </summary>
    private static Tensor Product(Tensor x2, Tensor w, Tensor? b)
    {
        if (w.shape[0] < 16 * w.shape[1] || x2.shape[0] < 16) return F.linear(x2, w, b);
        using var xt = x2.t();
        using var yt = w.matmul(xt);
        var y = yt.t().contiguous();
        if (b is not null) y.add_(b);
        return y;
    }

    /// <summary>Weight rows [start, start+count) as a dense tensor in <paramref name="dtype"/> (a new tensor the caller owns).</summary>
    protected virtual Tensor DenseRows(long start, long count, ScalarType dtype) => Weight.narrow(0, start, count).to_type(dtype);

    /// <summary>Address of a contiguous CPU tensor's first element (valid while the tensor lives).</summary>
    internal static nint DataPointerOf(Tensor t) => THSTensor_data(t.Handle);

    [DllImport("LibTorchSharp")]
    private static extern nint THSTensor_data(nint handle);

    /// <summary>Disposes the weight and the bias.</summary>
    public virtual void Dispose()
    {
        Weight.Dispose();
        _bias?.Dispose();
        GC.SuppressFinalize(this);
    }
}
