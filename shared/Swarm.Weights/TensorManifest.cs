using System.Text.Json;
using System.Text.Json.Nodes;

namespace Swarm.Weights;

/// <summary>The SHA-256 and length of one tensor's bytes (exactly its data range in the safetensors file).</summary>
/// <param name="Sha256">Lower-case hex digest.</param>
/// <param name="Length">Bytes of the tensor.</param>
public sealed record TensorDigest(string Sha256, long Length);

/// <summary>
/// Per-tensor SHA-256 of every tensor of a source (a repository at a revision), computed once from the source by
/// <see cref="TensorManifestBuilder"/>. Every fetched tensor is checked against it before use, whichever server or peer
/// sent it. Stored as JSON: <c>{"format":"swarm-tensor-manifest/1","source":URL,"tensors":{NAME:{"sha256":HEX,"bytes":N}}}</c>.
/// </summary>
public sealed class TensorManifest
{
    /// <summary>The value of the <c>format</c> field this version reads and writes.</summary>
    public const string Format = "swarm-tensor-manifest/1";

    /// <summary>The source it was computed from (<see cref="ModelSource.Key"/>).</summary>
    public string Source { get; }

    /// <summary>Digest of every tensor, by name.</summary>
    public IReadOnlyDictionary<string, TensorDigest> Tensors { get; }

    /// <summary>Creates a manifest; digests must be 64 lower-case hex digits and lengths non-negative.</summary>
    public TensorManifest(string source, IReadOnlyDictionary<string, TensorDigest> tensors)
    {
        foreach (var (name, d) in tensors)
            if (!IsSha256Hex(d.Sha256) || d.Length < 0)
                throw new ArgumentException($"tensor '{name}': invalid digest '{d.Sha256}' / length {d.Length}", nameof(tensors));
        Source = source;
        Tensors = tensors;
    }

    /// <summary>The digest of a tensor, or null when the manifest does not list it.</summary>
    public TensorDigest? Find(string name) => Tensors.GetValueOrDefault(name);

    /// <summary>The manifest as JSON text (tensors sorted by name, so equal manifests give equal bytes).</summary>
    public string ToJson()
    {
        var tensors = new JsonObject();
        foreach (var (name, d) in Tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            tensors[name] = new JsonObject { ["sha256"] = d.Sha256, ["bytes"] = d.Length };
        var root = new JsonObject { ["format"] = Format, ["source"] = Source, ["tensors"] = tensors };
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>Parses manifest JSON; <paramref name="origin"/> (a path or URL) names it in errors.</summary>
    /// <exception cref="WeightFetchException">Not a manifest of this format, or a malformed entry.</exception>
    public static TensorManifest Parse(string json, string origin)
    {
        try
        {
            var root = JsonNode.Parse(json) as JsonObject ?? throw Bad("not a JSON object");
            if ((string?)root["format"] != Format) throw Bad($"format is '{root["format"]}', expected '{Format}'");
            string source = (string?)root["source"] ?? throw Bad("no 'source'");
            var tensors = new Dictionary<string, TensorDigest>();
            foreach (var (name, node) in root["tensors"] as JsonObject ?? throw Bad("no 'tensors' object"))
            {
                string? sha = (string?)node?["sha256"];
                long? length = (long?)node?["bytes"];
                if (sha is null || !IsSha256Hex(sha) || length is not >= 0) throw Bad($"tensor '{name}' has no valid sha256 and bytes");
                tensors[name] = new TensorDigest(sha, length.Value);
            }
            return new TensorManifest(source, tensors);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            throw Bad(e.Message);
        }

        WeightFetchException Bad(string why) => new($"{origin}: not a valid tensor manifest ({why})");
    }

    /// <summary>Reads a manifest file.</summary>
    public static TensorManifest Load(string path)
    {
        if (!File.Exists(path)) throw new WeightFetchException($"manifest not found: {path}");
        return Parse(File.ReadAllText(path), path);
    }

    /// <summary>True for 64 lower-case hex digits.</summary>
    public static bool IsSha256Hex(string text) => text.Length == 64 && text.All(char.IsAsciiHexDigitLower);
}
