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
        var a = GC.AllocateUninitializedArray<float>((int)t.NumberOfElements, pinned: true);
        if (a.Length == 0) return a;
        using var scope = NewDisposeScope(); // the intermediate copies, never t itself
        t.cpu().to_type(ScalarType.Float32).contiguous().data<float>().CopyTo(a);
        return a;
    }
}
