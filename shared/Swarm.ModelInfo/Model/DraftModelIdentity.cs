using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Swarm.Model;

/// <summary>
/// The name a draft model goes by between the coordinator and the nodes (<c>Hello.DraftModel</c>):
/// <c>sha256:</c> and the first 16 hex digits of a SHA-256 over its <c>config.json</c>, its <c>tokenizer.json</c> (when
/// there is one) and the header of each <c>*.safetensors</c> file (tensor names, dtypes, shapes and offsets) — not the folder's name, which may differ from machine to machine. Reading
/// only those (no weights), it is cheap and torch-free: the coordinator computes it from its own copy without loading the
/// model. Two folders with the same architecture, tokenizer and tensor layout but other weights share it — the draft only
/// changes speed, never output (the target verifies every drafted token), so a mismatch there costs acceptance, not correctness.
/// </summary>
public static class DraftModelIdentity
{
    /// <summary>The identity of the checkpoint folder <paramref name="dir"/>.</summary>
    /// <exception cref="IOException">No config.json or safetensors file, or a file that cannot be read.</exception>
    public static string Of(string dir)
    {
        string config = Path.Combine(dir, "config.json");
        if (!File.Exists(config)) throw new FileNotFoundException($"no config.json in {dir}", config);
        var files = Directory.GetFiles(dir, "*.safetensors").OrderBy(f => Path.GetFileName(f), StringComparer.Ordinal).ToArray();
        if (files.Length == 0) throw new FileNotFoundException($"no *.safetensors file in {dir}");
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(File.ReadAllBytes(config));
        string tokenizer = Path.Combine(dir, "tokenizer.json");
        if (File.Exists(tokenizer)) sha.AppendData(File.ReadAllBytes(tokenizer));
        Span<byte> prefix = stackalloc byte[8];
        foreach (string file in files)
        {
            using var stream = File.OpenRead(file);
            stream.ReadExactly(prefix);
            ulong length = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
            if (length > (ulong)Checkpoints.SafetensorsHeader.MaxHeaderBytes || (long)length > stream.Length - 8)
                throw new InvalidDataException($"{file}: a header of {length} bytes");
            var header = new byte[length];
            stream.ReadExactly(header);
            sha.AppendData(header);
        }
        return $"sha256:{Convert.ToHexStringLower(sha.GetHashAndReset())[..16]}";
    }
}
