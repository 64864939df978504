using static TorchSharp.torch;

namespace Swarm.Model;

/// <summary>A linear layer with f32 weights (<see cref="WeightFormat.F32"/>).</summary>
internal sealed class F32Linear(Tensor weight, Tensor? bias, int parallelism)
    : LinearWeights(Stored(weight), bias, parallelism)
{
    public override WeightFormat Format => WeightFormat.F32;

    /// <summary>From 9 rows on libtorch's f32 GEMM over the same storage is as fast (the old column-split GEMV's limit).</summary>
    protected override int GemvMaxRows => 8;

    private static Tensor Stored(Tensor weight)
    {
        if (weight.dtype == ScalarType.Float32) return weight;
        using (weight) return weight.to_type(ScalarType.Float32);
    }

    protected override unsafe void Gemv(float* x, int rows, int r0, int r1, float* bias, float* y) =>
        GemvKernels.Run<float, F32Loader>(x, rows, (float*)WeightData, (int)In, r0, r1, null, bias, y, (int)Out);
}
