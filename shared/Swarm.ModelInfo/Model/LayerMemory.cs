namespace Swarm.Model;

/// <summary>
/// What one transformer layer costs in memory, as placement counts it: the coordinator gives a node as many layers as
/// its budget holds at <see cref="PlacementBytesPerElement"/> bytes per weight plus KV cache for
/// <see cref="KvReserveTokens"/> tokens each, and a node checks at start that its budget holds at least one.
/// </summary>
public static class LayerMemory
{
    /// <summary>Bytes per element placement assumes (f32; the coordinator does not know a node's compute dtype).</summary>
    public const int PlacementBytesPerElement = 4;

    /// <summary>KV-cache tokens reserved per hosted layer when counting how many layers fit (four 2048-token sessions).</summary>
    public const int KvReserveTokens = 8192;

    /// <summary>Weight bytes of one GPT-NeoX layer: 4h² + 2h·i weights plus 9h + i biases and norms, times <paramref name="bytesPerElement"/>.</summary>
    public static long WeightBytesPerLayer(ModelConfig config, int bytesPerElement)
    {
        ArgumentNullException.ThrowIfNull(config);
        long h = config.HiddenSize, i = config.IntermediateSize;
        return (4 * h * h + 2 * h * i + 9 * h + i) * bytesPerElement;
    }

    /// <summary>
    /// Weight bytes of one GPT-NeoX layer as a node stores it in <paramref name="format"/>: the matrices (4h² + 2h·i) at
    /// <see cref="WeightFormats.BytesPerWeight"/>, the two LayerNorms (4h) at the activation size, the biases of the four
    /// matrices (one per output row: 5h + i) in f32, and for int8 one f32 scale per output row as well.
    /// </summary>
    public static long WeightBytesPerLayer(ModelConfig config, WeightFormat format)
    {
        ArgumentNullException.ThrowIfNull(config);
        long h = config.HiddenSize, i = config.IntermediateSize;
        long rows = 5 * h + i;
        long scales = format == WeightFormat.Int8 ? rows * sizeof(float) : 0;
        return (4 * h * h + 2 * h * i) * format.BytesPerWeight() + 4 * h * format.BytesPerActivation() + rows * sizeof(float) + scales;
    }

    /// <summary>KV-cache bytes one token occupies in one layer (keys and values, 2h elements).</summary>
    public static long KvBytesPerTokenPerLayer(ModelConfig config, int bytesPerElement)
    {
        ArgumentNullException.ThrowIfNull(config);
        return 2L * config.HiddenSize * bytesPerElement;
    }

    /// <summary>
    /// The smallest memory budget placement gives a layer to: one layer's weights plus KV cache for
    /// <see cref="KvReserveTokens"/> tokens, at <see cref="PlacementBytesPerElement"/> bytes per element.
    /// </summary>
    public static long MinimumNodeBudgetBytes(ModelConfig config) =>
        WeightBytesPerLayer(config, PlacementBytesPerElement) + KvBytesPerTokenPerLayer(config, PlacementBytesPerElement) * KvReserveTokens;

    /// <summary>
    /// The smallest memory budget placement gives a layer to on a node that stores <paramref name="format"/>: one layer's
    /// weights in that format plus KV cache for <see cref="KvReserveTokens"/> tokens at its activation size.
    /// </summary>
    public static long MinimumNodeBudgetBytes(ModelConfig config, WeightFormat format) =>
        WeightBytesPerLayer(config, format) + KvBytesPerTokenPerLayer(config, format.BytesPerActivation()) * KvReserveTokens;
}
