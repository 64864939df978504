using System.Text.Json;
using System.Text.Json.Nodes;

namespace Swarm.Model;

/// <summary>
/// GPT-NeoX hyper-parameters, read from an HF <c>config.json</c> in either style:
/// hub-legacy (<c>rotary_pct</c>, <c>rotary_emb_base</c>) or transformers-5 (<c>rope_parameters</c>).
/// </summary>
public sealed record ModelConfig
{
    public required int HiddenSize { get; init; }
    public required int NumLayers { get; init; }
    public required int NumHeads { get; init; }
    public required int IntermediateSize { get; init; }
    public required int VocabSize { get; init; }
    /// <summary>Fraction of each head's dims that get rotary embeddings (Pythia: 0.25).</summary>
    public double RotaryPct { get; init; } = 0.25;
    /// <summary>Rotary base θ (Pythia: 10000).</summary>
    public double RotaryBase { get; init; } = 10000;
    /// <summary>Pythia uses x + attn(ln1(x)) + mlp(ln2(x)); false means the sequential form.</summary>
    public bool UseParallelResidual { get; init; } = true;
    public double LayerNormEps { get; init; } = 1e-5;
    public int MaxPositionEmbeddings { get; init; } = 2048;
    /// <summary>Storage dtype named by the checkpoint: "float32", "float16" or "bfloat16".</summary>
    public string TorchDtype { get; init; } = "float32";
    public int BosTokenId { get; init; }
    public int EosTokenId { get; init; }
    public string HiddenAct { get; init; } = "gelu";

    public int HeadDim => HiddenSize / NumHeads;
    /// <summary>Number of leading head dims that are rotated: head_dim · rotary_pct.</summary>
    public int RotaryDims => (int)(HeadDim * RotaryPct);

    /// <summary>Loads <c>config.json</c> from a checkpoint folder.</summary>
    /// <exception cref="CheckpointException">Missing file, wrong model type or missing fields.</exception>
    public static ModelConfig Load(string checkpointDir)
    {
        if (!Directory.Exists(checkpointDir))
            throw new CheckpointException($"checkpoint folder not found: {checkpointDir}");
        string path = Path.Combine(checkpointDir, "config.json");
        if (!File.Exists(path))
            throw new CheckpointException($"config.json not found in {checkpointDir}");
        return Parse(File.ReadAllBytes(path), path);
    }

    /// <summary>Parses the text of a <c>config.json</c> (e.g. fetched from a hub); <paramref name="source"/> names it in errors.</summary>
    /// <exception cref="CheckpointException">Invalid JSON, wrong model type or missing fields.</exception>
    public static ModelConfig Parse(ReadOnlySpan<byte> utf8Json, string source)
    {
        JsonNode? root;
        try { root = JsonNode.Parse(utf8Json); }
        catch (JsonException e) { throw new CheckpointException($"{source}: invalid JSON ({e.Message})"); }
        if (root is not JsonObject o) throw new CheckpointException($"{source}: not a JSON object");
        return FromJson(o, source);
    }

    internal static ModelConfig FromJson(JsonObject o, string source)
    {
        string? type = (string?)o["model_type"];
        if (type != "gpt_neox")
            throw new CheckpointException($"{source}: model_type is '{type ?? "(missing)"}', expected 'gpt_neox'");
        int Req(string key) => o[key] is JsonValue v && v.TryGetValue(out int i) ? i
            : throw new CheckpointException($"{source}: required field '{key}' is missing or not an integer");
        double? Num(JsonNode? n) => n is JsonValue v && v.TryGetValue(out double d) ? d : null;

        double rotaryPct = Num(o["rotary_pct"]) ?? 0.25, rotaryBase = Num(o["rotary_emb_base"]) ?? 10000;
        if (o["rope_parameters"] is JsonObject rope)
        {
            rotaryPct = Num(rope["partial_rotary_factor"]) ?? Num(o["partial_rotary_factor"]) ?? rotaryPct;
            rotaryBase = Num(rope["rope_theta"]) ?? rotaryBase;
        }
        else
        {
            rotaryPct = Num(o["partial_rotary_factor"]) ?? rotaryPct;
            rotaryBase = Num(o["rope_theta"]) ?? rotaryBase;
        }
        var cfg = new ModelConfig
        {
            HiddenSize = Req("hidden_size"),
            NumLayers = Req("num_hidden_layers"),
            NumHeads = Req("num_attention_heads"),
            IntermediateSize = o["intermediate_size"] is null ? 4 * Req("hidden_size") : Req("intermediate_size"),
            VocabSize = Req("vocab_size"),
            RotaryPct = rotaryPct,
            RotaryBase = rotaryBase,
            UseParallelResidual = o["use_parallel_residual"] is JsonValue pr && pr.TryGetValue(out bool b) ? b : true,
            LayerNormEps = Num(o["layer_norm_eps"]) ?? 1e-5,
            MaxPositionEmbeddings = o["max_position_embeddings"] is JsonValue mp && mp.TryGetValue(out int m) ? m : 2048,
            TorchDtype = (string?)o["dtype"] ?? (string?)o["torch_dtype"] ?? "float32",
            BosTokenId = o["bos_token_id"] is JsonValue bo && bo.TryGetValue(out int bos) ? bos : 0,
            EosTokenId = o["eos_token_id"] is JsonValue eo && eo.TryGetValue(out int eos) ? eos : 0,
            HiddenAct = (string?)o["hidden_act"] ?? "gelu",
        };
        if (cfg.HiddenSize % cfg.NumHeads != 0)
            throw new CheckpointException($"{source}: hidden_size {cfg.HiddenSize} is not divisible by num_attention_heads {cfg.NumHeads}");
        if (cfg.HiddenAct is not ("gelu" or "gelu_python"))
            throw new CheckpointException($"{source}: hidden_act '{cfg.HiddenAct}' is not supported (only exact gelu)");
        return cfg;
    }

    /// <summary>Serialises in the hub-legacy style that real Pythia checkpoints ship.</summary>
    public string ToJson()
    {
        var o = new JsonObject
        {
            ["architectures"] = new JsonArray("GPTNeoXForCausalLM"),
            ["model_type"] = "gpt_neox",
            ["bos_token_id"] = BosTokenId,
            ["eos_token_id"] = EosTokenId,
            ["hidden_act"] = HiddenAct,
            ["hidden_size"] = HiddenSize,
            ["intermediate_size"] = IntermediateSize,
            ["layer_norm_eps"] = LayerNormEps,
            ["max_position_embeddings"] = MaxPositionEmbeddings,
            ["num_attention_heads"] = NumHeads,
            ["num_hidden_layers"] = NumLayers,
            ["rotary_emb_base"] = RotaryBase,
            ["rotary_pct"] = RotaryPct,
            ["tie_word_embeddings"] = false,
            ["torch_dtype"] = TorchDtype,
            ["use_cache"] = true,
            ["use_parallel_residual"] = UseParallelResidual,
            ["vocab_size"] = VocabSize,
        };
        return o.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }
}

/// <summary>A checkpoint could not be read: the message names the file and what is wrong.</summary>
public sealed class CheckpointException(string message) : Exception(message);
