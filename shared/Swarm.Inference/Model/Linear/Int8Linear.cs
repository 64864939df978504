using System.Buffers;
using static TorchSharp.torch;

namespace Swarm.Model;

/// <summary>
/// A linear layer with int8 weights and one symmetric f32 scale per output row (<see cref="WeightFormat.Int8"/>):
/// W ≈ scale[r] · q[r, :], q in [-127, 127], scale[r] = max|W[r, :]| / 127.
/// </summary>
internal sealed class Int8Linear : LinearWeights
{
    private readonly Tensor _scales; // [out] f32
    private readonly nint _scaleData;

    private Int8Linear(Tensor quantized, Tensor scales, Tensor? bias, int parallelism) : base(quantized, bias, parallelism)
    {
        using (NewDisposeScope()) _scales = scales.to(Weight.device).contiguous().DetachFromDisposeScope();
        if (!ReferenceEquals(_scales, scales)) scales.Dispose();
        _scaleData = WeightData == 0 ? 0 : DataPointerOf(_scales);
    }

    /// <summary>Quantizes a float weight [out, in] (taking ownership of it and of <paramref name="bias"/>).</summary>
    public static Int8Linear Quantize(Tensor weight, Tensor? bias, int parallelism)
    {
        var (q, s) = Int8Quantizer.Quantize(weight);
        weight.Dispose();
        return new Int8Linear(q, s, bias, parallelism);
    }

    public override WeightFormat Format => WeightFormat.Int8;

    /// <summary>The GEMM path dequantizes on every call, so the kernels keep larger batches.</summary>
    protected override int GemvMaxRows => 32;

    /// <summary>The per-row scales, [out] f32.</summary>
    public Tensor Scales => _scales;

    public override long Bytes => base.Bytes + _scales.NumberOfElements * 4;

    protected override unsafe void Gemv(float* x, int rows, int r0, int r1, float* bias, float* y)
    {
        int k = (int)In;
        if (!Int8Kernels.IsSupported)
        {
            GemvKernels.Run<sbyte, Int8Loader>(x, rows, (sbyte*)WeightData, k, r0, r1, (float*)_scaleData, bias, y, (int)Out);
            return;
        }
        // Each call quantizes its own copy of x (cheap beside the rows it multiplies); a decode step quantizes once per
        // product instead (DecodeFork).
        var values = ArrayPool<short>.Shared.Rent(rows * k);
        var scales = ArrayPool<float>.Shared.Rent(rows * Int8Kernels.Blocks(k));
        try
        {
            fixed (short* q = values)
            fixed (float* s = scales)
                MultiplyRows(Int8Kernels.Quantize(x, rows, k, q, s), r0, r1, y);
        }
        finally
        {
            ArrayPool<short>.Shared.Return(values);
            ArrayPool<float>.Shared.Return(scales);
        }
    }

    /// <summary>Output rows [r0, r1) of y = x·Wᵀ + b from activations already quantized (<see cref="Int8Kernels.IsSupported"/> only).</summary>
    internal unsafe void MultiplyRows(in Int8Activations a, int r0, int r1, float* y) =>
        Int8Kernels.Run(a, (sbyte*)WeightData, r0, r1, (float*)_scaleData, (float*)BiasData, y, (int)Out);

    protected override Tensor DenseRows(long start, long count, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var w = Weight.narrow(0, start, count).to_type(ScalarType.Float32) * _scales.narrow(0, start, count).unsqueeze(1);
        return w.to_type(dtype).MoveToOuterDisposeScope();
    }

    public override void Dispose()
    {
        _scales.Dispose();
        base.Dispose();
    }
}
