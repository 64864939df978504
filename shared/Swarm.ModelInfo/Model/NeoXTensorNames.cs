namespace Swarm.Model;

/// <summary>
/// The HF names of a GPT-NeoX checkpoint's tensors, by what needs them: a pipeline stage that hosts layers [A, B)
/// reads the tensors of those layers, plus the embedding when it is first and the final norm and unembedding when it
/// is last. Torch-free, so the weight fetcher asks for exactly the tensors the engine will read.
/// </summary>
public static class NeoXTensorNames
{
    /// <summary>Input embedding, read by the first stage.</summary>
    public const string EmbedIn = "gpt_neox.embed_in.weight";
    /// <summary>Final LayerNorm weight, read by the last stage.</summary>
    public const string FinalNormWeight = "gpt_neox.final_layer_norm.weight";
    /// <summary>Final LayerNorm bias, read by the last stage.</summary>
    public const string FinalNormBias = "gpt_neox.final_layer_norm.bias";
    /// <summary>Unembedding (the LM head), read by the last stage.</summary>
    public const string EmbedOut = "embed_out.weight";

    private static readonly string[] LayerParts =
    [
        "input_layernorm.weight", "input_layernorm.bias", "post_attention_layernorm.weight", "post_attention_layernorm.bias",
        "attention.query_key_value.weight", "attention.query_key_value.bias", "attention.dense.weight", "attention.dense.bias",
        "mlp.dense_h_to_4h.weight", "mlp.dense_h_to_4h.bias", "mlp.dense_4h_to_h.weight", "mlp.dense_4h_to_h.bias",
    ];

    /// <summary>Prefix of every tensor of layer <paramref name="index"/>, e.g. <c>gpt_neox.layers.3.</c>.</summary>
    public static string LayerPrefix(int index) => $"gpt_neox.layers.{index}.";

    /// <summary>Names of the tensors of layer <paramref name="index"/>.</summary>
    public static IEnumerable<string> ForLayer(int index) => LayerParts.Select(p => LayerPrefix(index) + p);

    /// <summary>Names of the checkpoint tensors a stage of layers [start, end) reads.</summary>
    public static IEnumerable<string> ForStage(ModelConfig c, int start, int end)
    {
        if (start == 0) yield return EmbedIn;
        for (int i = start; i < end; i++)
            foreach (var name in ForLayer(i)) yield return name;
        if (end == c.NumLayers)
        {
            yield return FinalNormWeight;
            yield return FinalNormBias;
            yield return EmbedOut;
        }
    }
}
