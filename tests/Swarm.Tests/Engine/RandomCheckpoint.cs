using System.Text.Json;
using System.Text.Json.Nodes;
using Swarm.Checkpoints;
using Swarm.Model;
using static TorchSharp.torch;

namespace Swarm.Tests.Engine;

/// <summary>A small GPT-NeoX configuration to write as a random checkpoint.</summary>
/// <param name="RopeParameters">Write config.json in the transformers-5 style (<c>rope_parameters</c>) instead of hub-legacy.</param>
internal sealed record NeoXSpec(
    int Hidden, int Heads, int Layers, int Vocab, double RotaryPct, double RotaryBase, bool Parallel,
    double Eps, ScalarType Dtype, bool RopeParameters, int Intermediate = 0)
{
    public int HeadDim => Hidden / Heads;

    public ModelConfig ToConfig() => new()
    {
        HiddenSize = Hidden, NumHeads = Heads, NumLayers = Layers, VocabSize = Vocab,
        IntermediateSize = Intermediate > 0 ? Intermediate : 4 * Hidden,
        RotaryPct = RotaryPct, RotaryBase = RotaryBase, UseParallelResidual = Parallel, LayerNormEps = Eps,
        MaxPositionEmbeddings = 128, TorchDtype = PresetWriter.DtypeName(Dtype),
    };
}

/// <summary>
/// Writes a random GPT-NeoX checkpoint (config.json + model.safetensors) with every tensor far from its
/// "neutral" value — LayerNorm weights 1 ± 0.3, LayerNorm and linear biases ~0.2, attention projections
/// wide enough that attention is not uniform — so a missing bias, a swapped LayerNorm or a wrong eps shows.
/// Returns the weights exactly as stored (rounded to the checkpoint dtype), as float64, for the reference.
/// </summary>
internal static class RandomCheckpoint
{
    public static Dictionary<string, double[]> Write(NeoXSpec spec, string dir, long seed)
    {
        var config = spec.ToConfig();
        Directory.CreateDirectory(dir);
        var shapes = PresetWriter.TensorShapes(config);
        var weights = new Dictionary<string, double[]>();
        using var g = new Generator((ulong)seed, CPU);
        using (var writer = SafetensorsWriter.Create(Path.Combine(dir, "model.safetensors"),
                   shapes.Select(s => new SafetensorsTensorInfo(s.Name, spec.Dtype, s.Shape)).ToList()))
        {
            foreach (var (name, shape) in shapes)
            {
                using var scope = NewDisposeScope();
                var values = Random(name, shape, g).to_type(spec.Dtype);
                writer.Write(name, values);
                weights[name] = values.to_type(ScalarType.Float64).data<double>().ToArray();
            }
            writer.Complete();
        }
        File.WriteAllText(Path.Combine(dir, "config.json"), ConfigJson(spec));
        return weights;
    }

    private static Tensor Random(string name, long[] shape, Generator g)
    {
        var n = randn(shape, ScalarType.Float32, generator: g);
        if (name.EndsWith("embed_in.weight", StringComparison.Ordinal)) return n;
        if (name.EndsWith("layernorm.weight", StringComparison.Ordinal) || name.EndsWith("layer_norm.weight", StringComparison.Ordinal))
            return n.mul(0.3).add(1.0);
        if (shape.Length == 1) return n.mul(0.2);
        double fanIn = shape[1];
        // q·k logits of order 1–3: attention is peaked, so wrong masking or rotary changes the output.
        double gain = name.Contains("query_key_value", StringComparison.Ordinal) ? 2.0 : 1.0;
        return n.mul(gain / Math.Sqrt(fanIn));
    }

    /// <summary>config.json in one of the two styles HF ships.</summary>
    public static string ConfigJson(NeoXSpec spec)
    {
        var c = spec.ToConfig();
        var o = JsonNode.Parse(c.ToJson())!.AsObject();
        if (spec.RopeParameters)
        {
            // transformers ≥ 5: rope settings move into rope_parameters; the legacy keys are gone.
            o.Remove("rotary_pct");
            o.Remove("rotary_emb_base");
            o.Remove("torch_dtype");
            o["dtype"] = c.TorchDtype;
            o["rope_parameters"] = new JsonObject
            {
                ["rope_type"] = "default",
                ["rope_theta"] = spec.RotaryBase,
                ["partial_rotary_factor"] = spec.RotaryPct,
            };
        }
        return o.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }
}
