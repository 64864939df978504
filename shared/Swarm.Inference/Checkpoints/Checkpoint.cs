using System.Text.Json;
using System.Text.Json.Nodes;
using Swarm.Model;
using static TorchSharp.torch;

namespace Swarm.Checkpoints;

/// <summary>
/// An HF-layout GPT-NeoX checkpoint folder: <c>config.json</c> plus <c>model.safetensors</c> or shards
/// listed in <c>model.safetensors.index.json</c>. Shards are opened lazily, so a stage that needs
/// only some tensors reads only the files (and bytes) that hold them.
/// </summary>
public sealed class Checkpoint : IDisposable
{
    private readonly Dictionary<string, string> _fileOf;          // tensor name → shard file path
    private readonly Dictionary<string, SafetensorsFile> _open = new();
    private readonly object _gate = new();

    public string Directory { get; }
    public ModelConfig Config { get; }

    /// <summary>Bytes read from tensor data so far (tests use it to show a stage reads only its share).</summary>
    public long BytesRead { get; private set; }

    private Checkpoint(string dir, ModelConfig config, Dictionary<string, string> fileOf)
    {
        Directory = dir; Config = config; _fileOf = fileOf;
    }

    public static Checkpoint Open(string dir)
    {
        var config = ModelConfig.Load(dir);
        // Older Pythia revisions ship only pytorch_model.bin: convert once (TorchSharp.PyBridge) into safetensors beside it.
        if (PytorchBinConverter.NeedsConversion(dir))
        {
            try { PytorchBinConverter.Convert(dir); }
            catch (Exception e) when (e is UnauthorizedAccessException or IOException)
            {
                throw new CheckpointException($"{dir} holds only pytorch_model.bin, which Swarm converts once to model.safetensors beside it, " +
                                              $"but the folder is not writable ({e.Message}); copy the checkpoint to a writable folder");
            }
        }
        string single = Path.Combine(dir, "model.safetensors");
        string index = Path.Combine(dir, "model.safetensors.index.json");
        var fileOf = new Dictionary<string, string>();
        if (File.Exists(index))
        {
            foreach (var (name, file) in ReadWeightMap(index))
                fileOf[name] = Path.Combine(dir, file);
            foreach (var missing in fileOf.Values.Distinct().Where(p => !File.Exists(p)))
                throw new CheckpointException($"{index} names shard {Path.GetFileName(missing)}, which is missing from {dir}");
        }
        else if (File.Exists(single))
        {
            using var f = SafetensorsFile.Open(single);
            foreach (var name in f.Entries.Keys) fileOf[name] = single;
        }
        else
        {
            throw new CheckpointException($"no model.safetensors or model.safetensors.index.json in {dir}");
        }
        return new Checkpoint(dir, config, fileOf);
    }

    /// <summary>Weight files opened so far: shards are opened on a stage's first read from them.</summary>
    public IReadOnlyList<string> OpenedFiles
    {
        get { lock (_gate) return [.. _open.Keys]; }
    }

    /// <summary>The weight file that holds <paramref name="name"/>, per the index (or the single file).</summary>
    public string? FileOf(string name) => _fileOf.GetValueOrDefault(name);

    /// <summary>Reads the <c>weight_map</c> (tensor name → file) of a HF index file (safetensors or pytorch .bin).</summary>
    internal static IEnumerable<(string Name, string File)> ReadWeightMap(string index)
    {
        JsonObject map;
        try
        {
            map = JsonNode.Parse(File.ReadAllText(index))?["weight_map"] as JsonObject
                ?? throw new CheckpointException($"{index}: no 'weight_map' object");
        }
        catch (JsonException e) { throw new CheckpointException($"{index}: invalid JSON ({e.Message})"); }
        return map.Select(kv => (kv.Key, (string?)kv.Value ?? throw new CheckpointException($"{index}: bad entry for '{kv.Key}'"))).ToList();
    }

    public bool Has(string name) => _fileOf.ContainsKey(name);

    public SafetensorsEntry Entry(string name)
    {
        var f = FileFor(name);
        return f.Entries.TryGetValue(name, out var e) ? e
            : throw new CheckpointException($"{f.Path}: tensor '{name}' is listed in the index but missing from the file");
    }

    /// <summary>Reads a tensor, checks its shape and converts it to <paramref name="dtype"/>.</summary>
    public Tensor Read(string name, long[] expectedShape, ScalarType dtype)
    {
        var e = Entry(name);
        CheckShape(e, expectedShape);
        return Convert(ReadRows(e, 0, e.Shape[0]), dtype);
    }

    /// <summary>Reads rows [start, start+count) of a tensor along dim 0 (tensor-parallel slices).</summary>
    public Tensor ReadRows(string name, long[] expectedShape, long start, long count, ScalarType dtype)
    {
        var e = Entry(name);
        CheckShape(e, expectedShape);
        return Convert(ReadRows(e, start, count), dtype);
    }

    /// <summary>
    /// Reads columns [start, start+count) of a 2-D tensor (row-parallel tensor-parallel slices): only those bytes
    /// of each row are read.
    /// </summary>
    public Tensor ReadColumns(string name, long[] expectedShape, long start, long count, ScalarType dtype)
    {
        var e = Entry(name);
        CheckShape(e, expectedShape);
        var t = FileFor(e.Name).ReadColumns(e, start, count);
        lock (_gate) BytesRead += t.NumberOfElements * t.ElementSize;
        return Convert(t, dtype);
    }

    private Tensor ReadRows(SafetensorsEntry e, long start, long count)
    {
        var f = FileFor(e.Name);
        var t = f.Read(e, start, count);
        lock (_gate) BytesRead += t.NumberOfElements * t.ElementSize;
        return t;
    }

    private static Tensor Convert(Tensor t, ScalarType dtype)
    {
        if (t.dtype == dtype) return t;
        using (t) return t.to_type(dtype);
    }

    private void CheckShape(SafetensorsEntry e, long[] expected)
    {
        if (!e.Shape.SequenceEqual(expected))
            throw new CheckpointException($"{FileFor(e.Name).Path}: tensor '{e.Name}' has shape [{string.Join(", ", e.Shape)}], expected [{string.Join(", ", expected)}] from config.json");
    }

    private SafetensorsFile FileFor(string name)
    {
        if (!_fileOf.TryGetValue(name, out var path))
            throw new CheckpointException($"tensor '{name}' is missing from the checkpoint in {Directory}");
        lock (_gate)
        {
            if (!_open.TryGetValue(path, out var f)) _open[path] = f = SafetensorsFile.Open(path);
            return f;
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            foreach (var f in _open.Values) f.Dispose();
            _open.Clear();
        }
    }
}
