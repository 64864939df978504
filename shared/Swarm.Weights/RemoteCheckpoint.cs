using System.Collections.Concurrent;
using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using Swarm.Checkpoints;
using Swarm.Model;

namespace Swarm.Weights;

/// <summary>Where one tensor's bytes are in a remote checkpoint: a weight file and an absolute byte range of it.</summary>
/// <param name="Name">HF tensor name.</param>
/// <param name="File">Weight file name in the repository, e.g. <c>model-00001-of-00005.safetensors</c>.</param>
/// <param name="Dtype">Safetensors dtype, e.g. <c>F16</c>.</param>
/// <param name="Shape">Dimensions.</param>
/// <param name="Offset">Absolute offset of the tensor's first byte in the file (data start + begin).</param>
/// <param name="Length">Bytes of the tensor.</param>
public sealed record RemoteTensor(string Name, string File, string Dtype, long[] Shape, long Offset, long Length);

/// <summary>
/// What is known about a checkpoint at a <see cref="ModelSource"/> without downloading its weights: <c>config.json</c>,
/// <c>tokenizer.json</c> (if any), <c>model.safetensors.index.json</c> (if sharded) and, on demand, the safetensors
/// headers of the weight files — each read with two HTTP range requests (the 8-byte length, then the JSON), so
/// opening a 24 GB checkpoint reads a few hundred kilobytes.
/// </summary>
public sealed class RemoteCheckpoint
{
    /// <summary>Name of the weights of an unsharded checkpoint.</summary>
    public const string SingleFile = "model.safetensors";
    /// <summary>Name of the shard index of a sharded checkpoint.</summary>
    public const string IndexFile = "model.safetensors.index.json";

    private const long MaxConfigBytes = 1 << 20, MaxTokenizerBytes = 64L << 20, MaxIndexBytes = 64L << 20;
    private readonly HttpRangeReader _http;
    private readonly IReadOnlyDictionary<string, string>? _fileOf; // tensor → shard (null: one file)
    private readonly ConcurrentDictionary<string, Lazy<Task<SafetensorsHeader>>> _headers = new();

    /// <summary>The repository and revision.</summary>
    public ModelSource Source { get; }
    /// <summary>The bytes of <c>config.json</c> as served (written unchanged into a pulled folder).</summary>
    public byte[] ConfigJson { get; }
    /// <summary>The parsed configuration.</summary>
    public ModelConfig Config { get; }
    /// <summary>The bytes of <c>tokenizer.json</c>, or null when the repository has none.</summary>
    public byte[]? TokenizerJson { get; }
    /// <summary>The weight files: the shards the index names, or <c>model.safetensors</c>.</summary>
    public IReadOnlyList<string> WeightFiles { get; }

    private RemoteCheckpoint(ModelSource source, HttpRangeReader http, byte[] config, ModelConfig parsed, byte[]? tokenizer,
        IReadOnlyDictionary<string, string>? fileOf)
    {
        Source = source; _http = http; ConfigJson = config; Config = parsed; TokenizerJson = tokenizer; _fileOf = fileOf;
        WeightFiles = fileOf is null ? [SingleFile] : [.. fileOf.Values.Distinct().Order(StringComparer.Ordinal)];
    }

    /// <summary>Reads config, tokenizer and index; for an unsharded checkpoint also checks that its header is readable.</summary>
    /// <exception cref="WeightFetchException">Unreachable, missing files, bad HTTP answers.</exception>
    /// <exception cref="CheckpointException">A file is there but malformed (config, index, a safetensors header).</exception>
    public static async Task<RemoteCheckpoint> OpenAsync(ModelSource source, HttpRangeReader http, CancellationToken ct = default)
    {
        var configUri = source.FileUri("config.json");
        byte[] config = (await http.GetFileAsync(configUri, MaxConfigBytes, optional: false, ct).ConfigureAwait(false))!;
        var parsed = ModelConfig.Parse(config, configUri.AbsoluteUri);
        byte[]? tokenizer = await http.GetFileAsync(source.FileUri("tokenizer.json"), MaxTokenizerBytes, optional: true, ct).ConfigureAwait(false);
        var indexUri = source.FileUri(IndexFile);
        byte[]? index = await http.GetFileAsync(indexUri, MaxIndexBytes, optional: true, ct).ConfigureAwait(false);
        var remote = new RemoteCheckpoint(source, http, config, parsed, tokenizer, index is null ? null : ReadWeightMap(index, indexUri.AbsoluteUri));
        if (index is null)
        {
            try { await remote.HeaderAsync(SingleFile, ct).ConfigureAwait(false); }
            catch (WeightFetchException e) when (e.StatusCode == HttpStatusCode.NotFound)
            {
                throw new WeightFetchException($"no {SingleFile} or {IndexFile} at {source.ResolveBase} (a revision that ships only " +
                                               "pytorch_model.bin cannot be fetched by range)", e);
            }
        }
        return remote;
    }

    /// <summary>The safetensors header of a weight file, read once (two range requests) and validated against the file's length.</summary>
    public Task<SafetensorsHeader> HeaderAsync(string file, CancellationToken ct = default) =>
        _headers.GetOrAdd(file, f => new Lazy<Task<SafetensorsHeader>>(() => ReadHeaderAsync(f, ct))).Value;

    private async Task<SafetensorsHeader> ReadHeaderAsync(string file, CancellationToken ct)
    {
        var uri = Source.FileUri(file);
        var (prefix, fileLength) = await _http.GetRangeAsync(uri, 0, 8, ct).ConfigureAwait(false);
        long headerLength = SafetensorsHeader.ReadLength(prefix, fileLength, uri.AbsoluteUri);
        var (json, sameLength) = await _http.GetRangeAsync(uri, 8, 8 + headerLength, ct).ConfigureAwait(false);
        if (sameLength != fileLength)
            throw new WeightFetchException($"{uri}: the file's length changed while its header was read ({fileLength}, then {sameLength} bytes)");
        return SafetensorsHeader.Parse(json, fileLength, uri.AbsoluteUri);
    }

    /// <summary>Where each named tensor is (in the order given); reads the headers of only the files that hold them.</summary>
    /// <exception cref="CheckpointException">A tensor is missing from the index or from its file's header.</exception>
    public async Task<IReadOnlyList<RemoteTensor>> LocateAsync(IEnumerable<string> names, CancellationToken ct = default)
    {
        var wanted = names.ToList();
        var fileOf = wanted.ToDictionary(n => n, n => FileOf(n));
        var headers = new Dictionary<string, SafetensorsHeader>();
        foreach (var file in fileOf.Values.Distinct())
            headers[file] = await HeaderAsync(file, ct).ConfigureAwait(false);
        return [.. wanted.Select(n => Locate(n, fileOf[n], headers[fileOf[n]]))];
    }

    /// <summary>Every tensor of every weight file, file by file in data order (what a manifest covers).</summary>
    public async Task<IReadOnlyList<RemoteTensor>> LocateAllAsync(CancellationToken ct = default)
    {
        var all = new List<RemoteTensor>();
        foreach (var file in WeightFiles)
        {
            var header = await HeaderAsync(file, ct).ConfigureAwait(false);
            all.AddRange(header.Entries.Values.OrderBy(e => e.Begin).Select(e => Locate(e.Name, file, header)));
        }
        return all;
    }

    private string FileOf(string name)
    {
        if (_fileOf is null) return SingleFile;
        return _fileOf.TryGetValue(name, out var file) ? file
            : throw new CheckpointException($"{Source.FileUri(IndexFile)}: tensor '{name}' is not in the weight_map");
    }

    private RemoteTensor Locate(string name, string file, SafetensorsHeader header) =>
        header.Entries.TryGetValue(name, out var e)
            ? new RemoteTensor(name, file, e.Dtype, e.Shape, header.DataStart + e.Begin, e.ByteCount)
            : throw new CheckpointException($"{Source.FileUri(file)}: tensor '{name}' is missing from the file's header");

    /// <summary>The index's <c>weight_map</c>, with shard names checked to be plain relative file names.</summary>
    private static Dictionary<string, string> ReadWeightMap(byte[] index, string source)
    {
        JsonObject map;
        try
        {
            map = JsonNode.Parse(index)?["weight_map"] as JsonObject
                ?? throw new CheckpointException($"{source}: no 'weight_map' object");
        }
        catch (JsonException e) { throw new CheckpointException($"{source}: invalid JSON ({e.Message})"); }
        var result = new Dictionary<string, string>();
        foreach (var (name, node) in map)
        {
            string file = node is JsonValue v && v.TryGetValue(out string? s) ? s : throw new CheckpointException($"{source}: bad entry for '{name}'");
            if (file.Length == 0 || file.Contains("..", StringComparison.Ordinal) || file.StartsWith('/') || file.Contains('\\'))
                throw new CheckpointException($"{source}: tensor '{name}' names shard '{file}', which is not a file name inside the repository");
            result[name] = file;
        }
        return result;
    }
}
