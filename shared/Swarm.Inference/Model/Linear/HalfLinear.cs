using static TorchSharp.torch;

namespace Swarm.Model;

/// <summary>A linear layer with bf16 or f16 weights (<see cref="WeightFormat.BF16"/>, <see cref="WeightFormat.F16"/>).</summary>
internal sealed class HalfLinear : LinearWeights
{
    public HalfLinear(Tensor weight, Tensor? bias, WeightFormat format, int parallelism)
        : base(Stored(weight, format), bias, parallelism)
    {
        Format = format;
    }

    public override WeightFormat Format { get; }

    /// <summary>
    /// bf16 weights with bf16 activations go to libtorch's bf16 GEMM from 9 rows on; f16 weights would be converted
    /// for it on every call, so the kernels keep them longer.
    /// </summary>
    protected override int GemvMaxRows => Format == WeightFormat.BF16 ? 8 : 32;

    private static Tensor Stored(Tensor weight, WeightFormat format)
    {
        var dtype = format == WeightFormat.BF16 ? ScalarType.BFloat16 : ScalarType.Float16;
        if (weight.dtype == dtype) return weight;
        using (weight) return weight.to_type(dtype);
    }

    protected override unsafe void Gemv(float* x, int rows, int r0, int r1, float* bias, float* y)
    {
        if (Format == WeightFormat.BF16)
            GemvKernels.Run<ushort, Bf16Loader>(x, rows, (ushort*)WeightData, (int)In, r0, r1, null, bias, y, (int)Out);
        else
            GemvKernels.Run<ushort, F16Loader>(x, rows, (ushort*)WeightData, (int)In, r0, r1, null, bias, y, (int)Out);
    }
}
