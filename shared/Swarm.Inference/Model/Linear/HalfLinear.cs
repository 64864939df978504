using TorchSharp;
using static TorchSharp.torch;

namespace Swarm.Model;

/// <summary>
/// A linear layer with bf16 or f16 weights (<see cref="WeightFormat.BF16"/>, <see cref="WeightFormat.F16"/>). f16 weights
/// on a CPU that runs the GEMV kernels are kept as <see cref="RebasedF16"/> codes when every value has one (the same
/// values, cheaper to widen); otherwise as plain f16.
/// </summary>
internal sealed class HalfLinear : LinearWeights
{
    private readonly bool _rebased;

    public HalfLinear(Tensor weight, Tensor? bias, WeightFormat format, int parallelism)
        : this(Stored(weight, format, out bool rebased), bias, format, rebased, parallelism)
    {
    }

    private HalfLinear(Tensor stored, Tensor? bias, WeightFormat format, bool rebased, int parallelism)
        : base(stored, bias, parallelism)
    {
        Format = format;
        _rebased = rebased;
    }

    public override WeightFormat Format { get; }

    /// <summary>True when f16 weights are held as <see cref="RebasedF16"/> codes.</summary>
    internal bool IsRebased => _rebased;

    /// <summary>
    /// bf16 weights with bf16 activations go to libtorch's bf16 GEMM from 9 rows on; f16 weights would be converted
    /// for it on every call, so the kernels keep them longer.
    /// </summary>
    protected override int GemvMaxRows => Format == WeightFormat.BF16 ? 8 : 32;

    private static Tensor Stored(Tensor weight, WeightFormat format, out bool rebased)
    {
        rebased = false;
        var dtype = format == WeightFormat.BF16 ? ScalarType.BFloat16 : ScalarType.Float16;
        if (weight.dtype != dtype)
        {
            var converted = weight.to_type(dtype);
            weight.Dispose();
            weight = converted;
        }
        if (format != WeightFormat.F16 || weight.device_type != DeviceType.CPU || !GemvKernels.IsSupported) return weight;
        var codes = RebasedF16.TryEncode(weight);
        if (codes is null) return weight;
        weight.Dispose();
        rebased = true;
        return codes;
    }

    protected override unsafe void Gemv(float* x, int rows, int r0, int r1, float* bias, float* y)
    {
        if (Format == WeightFormat.BF16)
            GemvKernels.Run<ushort, Bf16Loader>(x, rows, (ushort*)WeightData, (int)In, r0, r1, null, bias, y, (int)Out);
        else if (_rebased)
            GemvKernels.Run<ushort, RebasedF16Loader>(x, rows, (ushort*)WeightData, (int)In, r0, r1, null, bias, y, (int)Out);
        else
            GemvKernels.Run<ushort, F16Loader>(x, rows, (ushort*)WeightData, (int)In, r0, r1, null, bias, y, (int)Out);
    }

    protected override Tensor DenseRows(long start, long count, ScalarType dtype)
    {
        if (!_rebased) return base.DenseRows(start, count, dtype);
        using var f32 = RebasedF16.Decode(Weight, start, count);
        return f32.to_type(dtype);
    }
}
