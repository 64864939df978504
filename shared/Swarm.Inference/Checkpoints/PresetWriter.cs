using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Swarm.Model;
using static TorchSharp.torch;

namespace Swarm.Checkpoints;

/// <summary>What <see cref="PresetWriter.Write(ModelConfig, string, ScalarType, long, IProgress{ValueTuple{long, long}}?, long, CancellationToken)"/> produced.</summary>
/// <param name="Directory">The checkpoint folder.</param>
/// <param name="WeightFiles">The safetensors file(s), in order.</param>
/// <param name="TotalBytes">Bytes of tensor data written.</param>
public sealed record PresetWriteResult(string Directory, IReadOnlyList<string> WeightFiles, long TotalBytes);

/// <summary>
/// Writes a random-weight GPT-NeoX checkpoint in HF layout (<c>config.json</c>,
/// <c>generation_config.json</c>, <c>model.safetensors</c> or shards + <c>model.safetensors.index.json</c>),
/// so tests and benchmarks get models of every Pythia size without downloading them.
/// </summary>
/// <remarks>
/// Tensors are generated and streamed to disk one chunk of rows at a time (at most
/// <see cref="ChunkElements"/> elements), so memory stays at about ten MB whatever the model size:
/// pythia-12b is written with the same footprint as pythia-70m.
/// Values: matrices ~ N(0, 0.02²); LayerNorm weights 1 + N(0, 0.02²); biases N(0, 0.01²). Each chunk draws
/// from its own libtorch generator seeded by (seed, tensor name, chunk index), so the same seed gives
/// byte-identical files, a tensor does not depend on which other tensors exist, and the f16/bf16
/// checkpoints are the f32 one rounded. <c>config.json</c> is written last: its presence means the
/// checkpoint is complete (callers caching presets can rely on that).
/// </remarks>
public static class PresetWriter
{
    /// <summary>HF's shard limit for <c>save_pretrained(max_shard_size="2GB")</c>: 2·10⁹ bytes.</summary>
    public const long DefaultMaxShardBytes = 2_000_000_000;

    /// <summary>Largest number of elements generated at once (4 MB as f32).</summary>
    public const long ChunkElements = 1L << 20;

    /// <summary>Writes the named Pythia preset (see <see cref="Presets.All"/>).</summary>
    public static PresetWriteResult Write(string preset, string outDir, ScalarType dtype, long seed,
        IProgress<(long done, long total)>? progress = null, long maxShardBytes = DefaultMaxShardBytes, CancellationToken cancellationToken = default)
        => Write(Presets.Get(preset), outDir, dtype, seed, progress, maxShardBytes, cancellationToken);

    /// <summary>Writes a random-weight checkpoint for <paramref name="config"/> into <paramref name="outDir"/>
    /// (created if needed; weight files and config of an earlier checkpoint there are replaced).</summary>
    /// <param name="dtype">Storage dtype: Float32, Float16 or BFloat16.</param>
    /// <param name="seed">Same seed → byte-identical files.</param>
    /// <param name="progress">Receives (bytes written, total bytes) after every chunk, on the calling thread.</param>
    /// <param name="maxShardBytes">Shard limit; a single tensor larger than it gets a shard of its own.</param>
    public static PresetWriteResult Write(ModelConfig config, string outDir, ScalarType dtype, long seed,
        IProgress<(long done, long total)>? progress = null, long maxShardBytes = DefaultMaxShardBytes, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentException.ThrowIfNullOrEmpty(outDir);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxShardBytes, 1);
        string dtypeName = DtypeName(dtype);

        var tensors = TensorShapes(config).Select(t => new SafetensorsTensorInfo(t.Name, dtype, t.Shape)).ToList();
        var shards = PlanShards(tensors, maxShardBytes);
        long total = tensors.Sum(t => t.ByteCount);

        System.IO.Directory.CreateDirectory(outDir);
        RemoveEarlierCheckpoint(outDir);

        var files = new List<string>();
        long done = 0;
        progress?.Report((0, total));
        for (int s = 0; s < shards.Count; s++)
        {
            string file = shards.Count == 1 ? "model.safetensors" : $"model-{s + 1:D5}-of-{shards.Count:D5}.safetensors";
            using var writer = SafetensorsWriter.Create(Path.Combine(outDir, file), shards[s], new Dictionary<string, string> { ["format"] = "pt" });
            foreach (var t in shards[s])
            {
                foreach (long bytes in WriteRandom(writer, t, seed))
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    progress?.Report((done += bytes, total));
                }
            }
            writer.Complete();
            files.Add(file);
        }

        if (shards.Count > 1) WriteIndex(outDir, shards, files, total);
        var generation = new JsonObject
        {
            ["_from_model_config"] = true,
            ["bos_token_id"] = config.BosTokenId,
            ["eos_token_id"] = config.EosTokenId,
        };
        File.WriteAllText(Path.Combine(outDir, "generation_config.json"), generation.ToJsonString(Indented));
        WriteAtomically(Path.Combine(outDir, "config.json"), (config with { TorchDtype = dtypeName }).ToJson());
        return new PresetWriteResult(outDir, files, total);
    }

    /// <summary>Every GPT-NeoX tensor of <paramref name="config"/> with its shape, in HF naming and model order.</summary>
    public static IReadOnlyList<(string Name, long[] Shape)> TensorShapes(ModelConfig config)
    {
        long h = config.HiddenSize, i = config.IntermediateSize, v = config.VocabSize;
        var list = new List<(string, long[])> { ("gpt_neox.embed_in.weight", [v, h]) };
        for (int l = 0; l < config.NumLayers; l++)
        {
            string p = $"gpt_neox.layers.{l}.";
            list.Add((p + "input_layernorm.weight", [h]));
            list.Add((p + "input_layernorm.bias", [h]));
            list.Add((p + "post_attention_layernorm.weight", [h]));
            list.Add((p + "post_attention_layernorm.bias", [h]));
            list.Add((p + "attention.query_key_value.weight", [3 * h, h]));
            list.Add((p + "attention.query_key_value.bias", [3 * h]));
            list.Add((p + "attention.dense.weight", [h, h]));
            list.Add((p + "attention.dense.bias", [h]));
            list.Add((p + "mlp.dense_h_to_4h.weight", [i, h]));
            list.Add((p + "mlp.dense_h_to_4h.bias", [i]));
            list.Add((p + "mlp.dense_4h_to_h.weight", [h, i]));
            list.Add((p + "mlp.dense_4h_to_h.bias", [h]));
        }
        list.Add(("gpt_neox.final_layer_norm.weight", [h]));
        list.Add(("gpt_neox.final_layer_norm.bias", [h]));
        list.Add(("embed_out.weight", [v, h]));
        return list;
    }

    /// <summary>"float32", "float16" or "bfloat16" — the <c>torch_dtype</c> spelling.</summary>
    public static string DtypeName(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => "float32",
        ScalarType.Float16 => "float16",
        ScalarType.BFloat16 => "bfloat16",
        _ => throw new ArgumentException($"preset dtype must be Float32, Float16 or BFloat16, got {dtype}", nameof(dtype)),
    };

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    private static List<List<SafetensorsTensorInfo>> PlanShards(List<SafetensorsTensorInfo> tensors, long maxShardBytes)
    {
        var shards = new List<List<SafetensorsTensorInfo>> { new() };
        long size = 0;
        foreach (var t in tensors)
        {
            if (shards[^1].Count > 0 && size + t.ByteCount > maxShardBytes) { shards.Add([]); size = 0; }
            shards[^1].Add(t);
            size += t.ByteCount;
        }
        return shards;
    }

    /// <summary>Generates one tensor chunk by chunk into <paramref name="writer"/>, yielding the bytes of each chunk.</summary>
    private static IEnumerable<long> WriteRandom(SafetensorsWriter writer, SafetensorsTensorInfo t, long seed)
    {
        var (mean, std) = t.Name switch
        {
            _ when t.Shape.Length == 2 => (0.0, 0.02),
            _ when t.Name.EndsWith("layernorm.weight", StringComparison.Ordinal) || t.Name.EndsWith("layer_norm.weight", StringComparison.Ordinal) => (1.0, 0.02),
            _ => (0.0, 0.01),
        };
        long rows = t.Shape[0], cols = t.Shape.Length == 1 ? 1 : t.Shape[1];
        long rowsPerChunk = Math.Max(1, ChunkElements / cols);
        ulong nameKey = Fnv1a(t.Name);
        long chunk = 0;
        for (long r = 0; r < rows; r += rowsPerChunk, chunk++)
        {
            long n = Math.Min(rowsPerChunk, rows - r);
            using (NewDisposeScope())
            {
                using var g = new Generator(ChunkSeed(seed, nameKey, chunk), CPU);
                long[] shape = t.Shape.Length == 1 ? [n] : [n, cols];
                var values = empty(shape, ScalarType.Float32).normal_(mean, std, g);
                writer.Append(t.Name, t.DType == ScalarType.Float32 ? values : values.to(t.DType));
            }
            yield return n * cols * (t.ByteCount / t.ElementCount);
        }
    }

    private static ulong ChunkSeed(long seed, ulong nameKey, long chunk)
    {
        ulong z = Mix(Mix((ulong)seed) ^ nameKey);
        return Mix(z + ((ulong)chunk + 1) * 0x9E3779B97F4A7C15UL);
    }

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    private static ulong Fnv1a(string s)
    {
        ulong h = 14695981039346656037UL;
        foreach (byte b in Encoding.UTF8.GetBytes(s)) h = (h ^ b) * 1099511628211UL;
        return h;
    }

    private static void WriteIndex(string outDir, List<List<SafetensorsTensorInfo>> shards, List<string> files, long total)
    {
        var map = new JsonObject();
        for (int s = 0; s < shards.Count; s++)
            foreach (var t in shards[s]) map[t.Name] = files[s];
        var index = new JsonObject
        {
            ["metadata"] = new JsonObject { ["total_size"] = total },
            ["weight_map"] = map,
        };
        File.WriteAllText(Path.Combine(outDir, "model.safetensors.index.json"), index.ToJsonString(Indented));
    }

    private static void RemoveEarlierCheckpoint(string dir)
    {
        // config.json goes first so an interrupted rewrite never looks complete.
        foreach (string name in new[] { "config.json", "model.safetensors.index.json", "model.safetensors" })
            File.Delete(Path.Combine(dir, name));
        foreach (string shard in System.IO.Directory.EnumerateFiles(dir, "model-*-of-*.safetensors"))
            File.Delete(shard);
    }

    private static void WriteAtomically(string path, string text)
    {
        File.WriteAllText(path + ".partial", text);
        File.Move(path + ".partial", path, overwrite: true);
    }
}
