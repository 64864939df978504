using System.Collections;
using System.Text.Json;
using System.Text.Json.Nodes;
using Swarm.Model;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Swarm.Checkpoints;

/// <summary>
/// Converts the <c>pytorch_model.bin</c> weights that older Pythia revisions ship (one file, or shards
/// listed in <c>pytorch_model.bin.index.json</c>) into safetensors in the same HF layout, once, so
/// <see cref="Checkpoint"/> can read them tensor by tensor afterwards. Reading uses TorchSharp.PyBridge
/// (torch's zip serialization, torch ≥ 1.6); it loads one .bin file at a time, so peak memory is the
/// largest .bin file. Non-parameter buffers of old GPT-NeoX checkpoints (<c>attention.bias</c>,
/// <c>attention.masked_bias</c>, <c>rotary_emb.inv_freq</c>) are dropped. Dtypes are kept.
/// </summary>
internal static class PytorchBinConverter
{
    public const string SingleFile = "pytorch_model.bin";
    public const string IndexFile = "pytorch_model.bin.index.json";

    private static readonly string[] IgnoredSuffixes = [".attention.bias", ".attention.masked_bias", ".rotary_emb.inv_freq"];

    /// <summary>True when <paramref name="dir"/> holds .bin weights but no safetensors weights.</summary>
    public static bool NeedsConversion(string dir) =>
        (File.Exists(Path.Combine(dir, SingleFile)) || File.Exists(Path.Combine(dir, IndexFile)))
        && !File.Exists(Path.Combine(dir, "model.safetensors"))
        && !File.Exists(Path.Combine(dir, "model.safetensors.index.json"));

    /// <summary>
    /// Writes <c>model.safetensors</c> (or one safetensors shard per .bin shard plus
    /// <c>model.safetensors.index.json</c>) next to the .bin weights of <paramref name="dir"/>.
    /// The .bin files are left in place.
    /// </summary>
    /// <exception cref="CheckpointException">No .bin weights, an unreadable or legacy-format file, or a broken index.</exception>
    public static PresetWriteResult Convert(string dir, IProgress<(long done, long total)>? progress = null)
    {
        if (!System.IO.Directory.Exists(dir)) throw new CheckpointException($"checkpoint folder not found: {dir}");
        var binFiles = BinFiles(dir);
        long total = binFiles.Sum(f => new FileInfo(Path.Combine(dir, f)).Length), done = 0;
        progress?.Report((0, total));

        var outFiles = new List<string>();
        var weightMap = new JsonObject();
        long totalBytes = 0;
        for (int i = 0; i < binFiles.Count; i++)
        {
            string outName = binFiles.Count == 1 ? "model.safetensors" : $"model-{i + 1:D5}-of-{binFiles.Count:D5}.safetensors";
            totalBytes += ConvertFile(Path.Combine(dir, binFiles[i]), Path.Combine(dir, outName), name => weightMap[name] = outName);
            outFiles.Add(outName);
            progress?.Report((done += new FileInfo(Path.Combine(dir, binFiles[i])).Length, total));
        }
        if (binFiles.Count > 1)
        {
            var index = new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = totalBytes }, ["weight_map"] = weightMap };
            File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), index.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        }
        return new PresetWriteResult(dir, outFiles, totalBytes);
    }

    private static List<string> BinFiles(string dir)
    {
        string index = Path.Combine(dir, IndexFile);
        if (File.Exists(index))
        {
            var files = Checkpoint.ReadWeightMap(index).Select(e => e.File).Distinct().Order(StringComparer.Ordinal).ToList();
            foreach (var f in files.Where(f => !File.Exists(Path.Combine(dir, f))))
                throw new CheckpointException($"{index} names shard {f}, which is missing from {dir}");
            return files;
        }
        if (File.Exists(Path.Combine(dir, SingleFile))) return [SingleFile];
        throw new CheckpointException($"no {SingleFile} or {IndexFile} in {dir}");
    }

    /// <summary>Converts one .bin file; returns the bytes of tensor data written.</summary>
    private static long ConvertFile(string binPath, string outPath, Action<string> recordName)
    {
        Hashtable stateDict;
        try
        {
            using var stream = File.OpenRead(binPath);
            stateDict = PyTorchUnpickler.UnpickleStateDict(stream, leaveOpen: false);
        }
        catch (NotImplementedException e)
        {
            throw new CheckpointException($"{binPath}: cannot be read by TorchSharp.PyBridge ({e.Message}). Re-save it with torch ≥ 1.6 `torch.save(state_dict)` or convert it to safetensors.");
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Third-party parser of an untrusted file: any failure means it is not a state dict we can read (the type and message say why).
            throw new CheckpointException($"{binPath}: not a readable PyTorch state dict ({e.GetType().Name}: {e.Message})");
        }

        var tensors = new List<(string Name, Tensor Value)>();
        try
        {
            foreach (DictionaryEntry kv in stateDict)
            {
                if (kv.Value is not Tensor t) continue;
                string name = (string)kv.Key;
                if (IgnoredSuffixes.Any(s => name.EndsWith(s, StringComparison.Ordinal))) { t.Dispose(); continue; }
                tensors.Add((name, t));
            }
            tensors.Sort((a, b) => NaturalCompare(a.Name, b.Name));
            var infos = tensors.Select(t => new SafetensorsTensorInfo(t.Name, t.Value.dtype, t.Value.shape)).ToList();
            using var writer = SafetensorsWriter.Create(outPath, infos, new Dictionary<string, string> { ["format"] = "pt" });
            foreach (var (name, value) in tensors)
            {
                writer.Write(name, value);
                recordName(name);
            }
            writer.Complete();
            return writer.TotalBytes;
        }
        finally
        {
            foreach (var (_, value) in tensors) value.Dispose();
            foreach (DictionaryEntry kv in stateDict) (kv.Value as Tensor)?.Dispose();
        }
    }

    /// <summary>Orders "layers.10" after "layers.9" so the file follows the model's order.</summary>
    private static int NaturalCompare(string a, string b)
    {
        var pa = a.Split('.');
        var pb = b.Split('.');
        for (int i = 0; i < Math.Min(pa.Length, pb.Length); i++)
        {
            int c = int.TryParse(pa[i], out int na) && int.TryParse(pb[i], out int nb) ? na.CompareTo(nb) : string.CompareOrdinal(pa[i], pb[i]);
            if (c != 0) return c;
        }
        return pa.Length.CompareTo(pb.Length);
    }
}
