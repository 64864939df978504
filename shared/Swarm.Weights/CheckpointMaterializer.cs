using System.Buffers.Binary;
using Swarm.Checkpoints;

namespace Swarm.Weights;

/// <summary>
/// Writes fetched tensors as a local HF-layout checkpoint folder that <c>Checkpoint.Open</c> reads unchanged:
/// <c>config.json</c>, <c>tokenizer.json</c> (when the source has one) and one <c>model.safetensors</c> holding only
/// those tensors, under a valid header. Each blob is hashed again while it is copied, so a blob damaged on disk is
/// caught before use. Files appear under their real names only when complete.
/// </summary>
internal static class CheckpointMaterializer
{
    /// <summary>Writes the folder; returns the path of its <c>model.safetensors</c>.</summary>
    /// <param name="outDir">Target folder (created if missing); it must not hold a sharded checkpoint.</param>
    /// <param name="remote">Supplies config and tokenizer bytes.</param>
    /// <param name="tensors">The tensors to store, in the order given.</param>
    /// <param name="digests">Digest of each tensor's blob, by name (what <see cref="TensorFetcher.FetchAsync"/> returned).</param>
    /// <param name="cache">Holds the blobs.</param>
    /// <exception cref="WeightFetchException">A blob is missing or damaged, or the folder cannot be written (disk full).</exception>
    public static async Task<string> WriteAsync(string outDir, RemoteCheckpoint remote, IReadOnlyList<RemoteTensor> tensors,
        IReadOnlyDictionary<string, string> digests, WeightCache cache, CancellationToken ct = default)
    {
        outDir = Path.GetFullPath(outDir);
        foreach (var other in new[] { RemoteCheckpoint.IndexFile, "pytorch_model.bin", "pytorch_model.bin.index.json" })
            if (File.Exists(Path.Combine(outDir, other)))
                throw new WeightFetchException($"{outDir} already holds {other} of another checkpoint; pull into an empty folder");
        string weights = Path.Combine(outDir, RemoteCheckpoint.SingleFile);
        string partial = weights + ".partial";
        try
        {
            Directory.CreateDirectory(outDir);
            await WriteSafetensorsAsync(partial, tensors, digests, cache, ct).ConfigureAwait(false);
            File.Move(partial, weights, overwrite: true);
            if (remote.TokenizerJson is { } tokenizer) WeightCache.WriteAtomically(Path.Combine(outDir, "tokenizer.json"), tokenizer);
            WeightCache.WriteAtomically(Path.Combine(outDir, "config.json"), remote.ConfigJson);
            return weights;
        }
        catch (IOException e)
        {
            throw new WeightFetchException($"cannot write the checkpoint in {outDir}: {e.Message} — is the disk full?", e);
        }
        finally
        {
            try { File.Delete(partial); } catch (IOException) { }
        }
    }

    private static async Task WriteSafetensorsAsync(string path, IReadOnlyList<RemoteTensor> tensors,
        IReadOnlyDictionary<string, string> digests, WeightCache cache, CancellationToken ct)
    {
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        byte[] header = SafetensorsHeader.Build([.. tensors.Select(t => (t.Name, t.Dtype, t.Shape))], metadata, out long dataBytes);
        long expectedData = tensors.Sum(t => t.Length);
        if (dataBytes != expectedData)
            throw new WeightFetchException($"the fetched tensors hold {expectedData} bytes but their shapes and dtypes make {dataBytes}");
        await using var output = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20, useAsync: true);
        var prefix = new byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(prefix, header.Length);
        await output.WriteAsync(prefix, ct).ConfigureAwait(false);
        await output.WriteAsync(header, ct).ConfigureAwait(false);
        foreach (var t in tensors)
            await CopyVerifiedAsync(t, digests[t.Name], output, cache, ct).ConfigureAwait(false);
        await output.FlushAsync(ct).ConfigureAwait(false);
    }

    /// <summary>Appends a blob to <paramref name="output"/>, hashing it on the way; a damaged blob is deleted and reported.</summary>
    private static async Task CopyVerifiedAsync(RemoteTensor t, string sha256, Stream output, WeightCache cache, CancellationToken ct)
    {
        string blob = cache.BlobPath(sha256);
        if (!cache.HasBlob(sha256, t.Length))
            throw new WeightFetchException($"tensor '{t.Name}': its blob {blob} is missing or has the wrong length; fetch again");
        using var hash = new HashingStream();
        await using (var input = new FileStream(blob, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, useAsync: true))
        {
            var buffer = new byte[1 << 16];
            int n;
            while ((n = await input.ReadAsync(buffer, ct).ConfigureAwait(false)) > 0)
            {
                hash.Write(buffer.AsSpan(0, n));
                await output.WriteAsync(buffer.AsMemory(0, n), ct).ConfigureAwait(false);
            }
        }
        string actual = hash.HexDigest();
        if (actual != sha256)
        {
            File.Delete(blob);
            throw new WeightFetchException($"tensor '{t.Name}': the cached blob {blob} is damaged (SHA-256 {actual[..16]}…, expected {sha256[..16]}…); " +
                                           "it was deleted, pull again to fetch it");
        }
    }
}
