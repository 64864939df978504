using static TorchSharp.torch;

namespace Swarm.Model;

/// <summary>The torch dtypes of a <see cref="WeightFormat"/>.</summary>
public static class WeightFormatDtypes
{
    /// <summary>Dtype of activations, biases, LayerNorms, the embedding and the KV cache: f32 for F32, else bf16.</summary>
    public static ScalarType ComputeDtype(this WeightFormat format) =>
        format == WeightFormat.F32 ? ScalarType.Float32 : ScalarType.BFloat16;

    /// <summary>Dtype a checkpoint's matrices are read in before they are stored: the stored dtype, f32 for int8 (quantized from it).</summary>
    public static ScalarType ReadDtype(this WeightFormat format) => format switch
    {
        WeightFormat.BF16 => ScalarType.BFloat16,
        WeightFormat.F16 => ScalarType.Float16,
        _ => ScalarType.Float32,
    };

    /// <summary>The format that stores weights in <paramref name="dtype"/> (f32, bf16 or f16).</summary>
    public static WeightFormat FromDtype(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => WeightFormat.F32,
        ScalarType.BFloat16 => WeightFormat.BF16,
        ScalarType.Float16 => WeightFormat.F16,
        _ => throw new ArgumentException($"no weight format stores {dtype}", nameof(dtype)),
    };
}
