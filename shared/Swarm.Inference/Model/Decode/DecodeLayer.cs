using static TorchSharp.torch;

namespace Swarm.Model;

/// <summary>
/// One unsplit GPT-NeoX layer's weights as <see cref="ManagedDecode"/> reads them: the LayerNorms as f32 arrays (pinned,
/// copied once), the four matrices as the layer's own <see cref="LinearWeights"/> (shared, not copied).
/// </summary>
internal sealed record DecodeLayer(float[] Ln1W, float[] Ln1B, float[] Ln2W, float[] Ln2B,
    LinearWeights Qkv, LinearWeights Dense, LinearWeights Up, LinearWeights Down)
{
    /// <summary>A CPU copy of a small tensor as a pinned f32 array.</summary>
    public static float[] Host(Tensor t)
    {
        using var f = t.cpu().to_type(ScalarType.Float32).contiguous();
        var a = GC.AllocateUninitializedArray<float>((int)f.NumberOfElements, pinned: true);
        f.data<float>().CopyTo(a);
        return a;
    }
}
