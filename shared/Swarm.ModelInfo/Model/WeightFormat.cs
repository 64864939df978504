namespace Swarm.Model;

/// <summary>How a node stores the matrices of its layers and head (<c>--weights</c>).</summary>
public enum WeightFormat
{
    /// <summary>f32 weights, f32 activations and KV cache.</summary>
    F32,
    /// <summary>bf16 weights, bf16 activations and KV cache; products accumulate in f32.</summary>
    BF16,
    /// <summary>f16 weights; bf16 activations and KV cache; products accumulate in f32.</summary>
    F16,
    /// <summary>
    /// int8 weights with one symmetric f32 scale per output channel (row), quantized at load from any float checkpoint;
    /// bf16 activations and KV cache; products accumulate in f32. Biases, LayerNorms and the embedding stay bf16.
    /// </summary>
    Int8,
}

/// <summary>Names and sizes of the <see cref="WeightFormat"/>s, torch-free so the coordinator and the CLI can use them.</summary>
public static class WeightFormats
{
    /// <summary>Every format, in the order benchmarks list them.</summary>
    public static IReadOnlyList<WeightFormat> All { get; } = [WeightFormat.F32, WeightFormat.F16, WeightFormat.BF16, WeightFormat.Int8];

    /// <summary>The command-line name: f32, bf16, f16 or int8.</summary>
    public static string Name(this WeightFormat format) => format switch
    {
        WeightFormat.F32 => "f32",
        WeightFormat.BF16 => "bf16",
        WeightFormat.F16 => "f16",
        WeightFormat.Int8 => "int8",
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, "unknown weight format"),
    };

    /// <summary>Parses a command-line name (f32/float32/fp32, bf16/bfloat16, f16/float16/fp16, int8/i8/q8); null when unknown.</summary>
    public static WeightFormat? TryParse(string? name) => name?.Trim().ToLowerInvariant() switch
    {
        "f32" or "float32" or "fp32" => WeightFormat.F32,
        "bf16" or "bfloat16" => WeightFormat.BF16,
        "f16" or "float16" or "fp16" => WeightFormat.F16,
        "int8" or "i8" or "q8" => WeightFormat.Int8,
        _ => null,
    };

    /// <summary>Bytes of one stored matrix element.</summary>
    public static int BytesPerWeight(this WeightFormat format) => format switch
    {
        WeightFormat.F32 => 4,
        WeightFormat.BF16 or WeightFormat.F16 => 2,
        WeightFormat.Int8 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, "unknown weight format"),
    };

    /// <summary>Bytes of one activation, bias, LayerNorm or KV-cache element (the compute dtype: f32 for F32, else bf16).</summary>
    public static int BytesPerActivation(this WeightFormat format) => format == WeightFormat.F32 ? 4 : 2;
}
