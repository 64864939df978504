using static TorchSharp.torch;

namespace Swarm.Model;

/// <summary>Weight-only int8 quantization with symmetric per-output-channel scales (<see cref="WeightFormat.Int8"/>).</summary>
public static class Int8Quantizer
{
    /// <summary>
    /// q[r, :] = round(W[r, :] / scale[r]) clamped to [-127, 127], scale[r] = max|W[r, :]| / 127 (1 for an all-zero row),
    /// computed in f32. <paramref name="weight"/> ([out, in], any float dtype) is not disposed; the caller owns the results.
    /// </summary>
    public static (Tensor Quantized, Tensor Scales) Quantize(Tensor weight)
    {
        if (weight.dim() != 2) throw new ArgumentException($"expected a 2-D weight, got [{string.Join(", ", weight.shape)}]", nameof(weight));
        using var scope = NewDisposeScope();
        var w = weight.to_type(ScalarType.Float32);
        var max = w.abs().amax([1]);
        var scales = where(max > 0, max / 127f, ones_like(max));
        var q = (w / scales.unsqueeze(1)).round_().clamp_(-127, 127).to_type(ScalarType.Int8);
        return (q.MoveToOuterDisposeScope(), scales.MoveToOuterDisposeScope());
    }
}
