using System.Security.Cryptography;
using System.Text;

namespace Swarm.Weights;

/// <summary>
/// The on-disk cache of fetched tensors, under <c>$SWARM_CACHE/weights</c> (default <c>~/.cache/swarm/weights</c>):
/// <list type="bullet">
/// <item><c>blobs/sha256/HEX</c> — a complete, verified tensor's bytes, named by their SHA-256 (so the same tensor in
/// two revisions or two sources is stored once);</item>
/// <item><c>partial/KEY.part</c> — a tensor being downloaded; a restart continues it from its length, it is never
/// read as a tensor until it is complete and its digest checked;</item>
/// <item><c>refs/SOURCE/TENSOR</c> — which blob a tensor of a source was, for sources without a manifest;</item>
/// <item><c>manifests/SOURCE.json</c> — the tensor manifest of a source, once computed.</item>
/// </list>
/// Every file is written under a temporary name and renamed into place, so a crash leaves no half file under a real name.
/// </summary>
public sealed class WeightCache
{
    /// <summary>Creates a cache at <paramref name="root"/> (default <see cref="DefaultRoot"/>); folders are made on first write.</summary>
    public WeightCache(string? root = null) => Root = Path.GetFullPath(root ?? DefaultRoot);

    /// <summary><c>$SWARM_CACHE/weights</c>, or <c>~/.cache/swarm/weights</c> when SWARM_CACHE is unset.</summary>
    public static string DefaultRoot => Path.Combine(
        Environment.GetEnvironmentVariable("SWARM_CACHE") is { Length: > 0 } c
            ? c
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "swarm"),
        "weights");

    /// <summary>The cache's folder.</summary>
    public string Root { get; }

    /// <summary>Path of the blob with digest <paramref name="sha256"/> (it may not exist).</summary>
    public string BlobPath(string sha256) =>
        TensorManifest.IsSha256Hex(sha256) ? Path.Combine(Root, "blobs", "sha256", sha256) : throw new ArgumentException($"not a SHA-256: '{sha256}'", nameof(sha256));

    /// <summary>True when a blob with this digest and length is present.</summary>
    public bool HasBlob(string sha256, long length) => new FileInfo(BlobPath(sha256)) is { Exists: true } f && f.Length == length;

    /// <summary>Where tensor <paramref name="tensor"/> of source <paramref name="sourceKey"/> is downloaded to before it is verified.</summary>
    public string PartialPath(string sourceKey, string tensor) => Path.Combine(Root, "partial", $"{Sha256Hex(sourceKey + "\n" + tensor)}.part");

    /// <summary>Moves a complete, verified download into the blob store under its digest (a blob already there wins).</summary>
    public void CommitBlob(string partialPath, string sha256)
    {
        string blob = BlobPath(sha256);
        Directory.CreateDirectory(Path.GetDirectoryName(blob)!);
        try { File.Move(partialPath, blob, overwrite: false); }
        catch (IOException) when (File.Exists(blob))
        {
            File.Delete(partialPath); // the same bytes arrived by another download first
        }
    }

    /// <summary>The digest recorded for a tensor of a source fetched without a manifest, or null.</summary>
    public string? ReadRef(string sourceKey, string tensor)
    {
        string path = RefPath(sourceKey, tensor);
        if (!File.Exists(path)) return null;
        string text = File.ReadAllText(path).Trim();
        return TensorManifest.IsSha256Hex(text) ? text : null;
    }

    /// <summary>Records which blob a tensor of a source is.</summary>
    public void WriteRef(string sourceKey, string tensor, string sha256) => WriteAtomically(RefPath(sourceKey, tensor), Encoding.ASCII.GetBytes(sha256));

    private string RefPath(string sourceKey, string tensor) => Path.Combine(Root, "refs", Sha256Hex(sourceKey)[..32], Sha256Hex(tensor)[..32]);

    /// <summary>Path of the cached manifest of a source.</summary>
    public string ManifestPath(string sourceKey) => Path.Combine(Root, "manifests", $"{Sha256Hex(sourceKey)[..32]}.json");

    /// <summary>The cached manifest of a source, or null when none was computed (or the file belongs to another source).</summary>
    public TensorManifest? LoadManifest(string sourceKey)
    {
        string path = ManifestPath(sourceKey);
        if (!File.Exists(path)) return null;
        var manifest = TensorManifest.Load(path);
        return manifest.Source == sourceKey ? manifest : null;
    }

    /// <summary>Stores a manifest under its source.</summary>
    public void SaveManifest(TensorManifest manifest) =>
        WriteAtomically(ManifestPath(manifest.Source), Encoding.UTF8.GetBytes(manifest.ToJson()));

    /// <summary>Writes a file under a temporary name in the same folder and renames it into place.</summary>
    public static void WriteAtomically(string path, ReadOnlySpan<byte> bytes)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        string tmp = $"{path}.tmp-{Environment.ProcessId}-{Environment.CurrentManagedThreadId}";
        try
        {
            using (var f = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None)) f.Write(bytes);
            File.Move(tmp, path, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>SHA-256 of a file's bytes, as lower-case hex.</summary>
    public static async Task<string> HashFileAsync(string path, CancellationToken ct)
    {
        await using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, useAsync: true);
        return Convert.ToHexStringLower(await SHA256.HashDataAsync(file, ct).ConfigureAwait(false));
    }

    /// <summary>SHA-256 of a string's UTF-8 bytes, as lower-case hex.</summary>
    public static string Sha256Hex(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));
}
