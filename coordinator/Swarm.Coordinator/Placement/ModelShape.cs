using Swarm.Model;

namespace Swarm.Coordinator.Placement;

/// <summary>The sizes placement needs: how many layers, and what a layer costs in memory.</summary>
/// <param name="NumLayers">Transformer layers L.</param>
/// <param name="BytesPerLayer">Weight bytes of one layer.</param>
/// <param name="KvBytesPerTokenPerLayer">KV-cache bytes one token occupies in one layer (keys + values).</param>
/// <param name="ReservedBytesPerNode">
/// Bytes every node sets aside before layers (runtime, buffers, and — conservatively — the embedding and
/// unembedding that first and last stages hold). Default 0.
/// </param>
public sealed record ModelShape(int NumLayers, long BytesPerLayer, long KvBytesPerTokenPerLayer, long ReservedBytesPerNode = 0)
{
    /// <summary>
    /// Sizes of a GPT-NeoX layer: weights 4h² + 2h·i plus biases and norms 9h + i, KV 2h per token,
    /// times <paramref name="bytesPerElement"/> (2 for f16/bf16, 4 for f32).
    /// </summary>
    public static ModelShape FromConfig(ModelConfig config, int bytesPerElement, long reservedBytesPerNode = 0)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentOutOfRangeException.ThrowIfLessThan(bytesPerElement, 1);
        return new ModelShape(config.NumLayers, LayerMemory.WeightBytesPerLayer(config, bytesPerElement),
            LayerMemory.KvBytesPerTokenPerLayer(config, bytesPerElement), reservedBytesPerNode);
    }

    /// <summary>Problems with these sizes (empty when valid).</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (NumLayers < 1) errors.Add($"{nameof(NumLayers)} must be at least 1");
        if (BytesPerLayer < 1) errors.Add($"{nameof(BytesPerLayer)} must be positive");
        if (KvBytesPerTokenPerLayer < 0) errors.Add($"{nameof(KvBytesPerTokenPerLayer)} must not be negative");
        if (ReservedBytesPerNode < 0) errors.Add($"{nameof(ReservedBytesPerNode)} must not be negative");
        return errors;
    }
}
