namespace Swarm.Weights;

/// <summary>
/// Computes a <see cref="TensorManifest"/> from a source: every tensor's bytes are streamed once (a range request per
/// tensor, several at a time) through SHA-256 and not stored. This reads the whole checkpoint, so it is done once per
/// source and the result cached (<see cref="WeightCache.SaveManifest"/>); in a swarm the coordinator does it and
/// publishes the manifest.
/// </summary>
public static class TensorManifestBuilder
{
    /// <summary>Hashes every tensor of <paramref name="remote"/>; progress counts tensor bytes.</summary>
    /// <exception cref="WeightFetchException">The source failed.</exception>
    public static async Task<TensorManifest> BuildAsync(RemoteCheckpoint remote, HttpRangeReader http,
        IProgress<(long done, long total)>? progress = null, int parallelism = 4, CancellationToken ct = default)
    {
        var tensors = await remote.LocateAllAsync(ct).ConfigureAwait(false);
        var counter = new ProgressCounter(progress, tensors.Sum(t => t.Length));
        var source = new HttpTensorSource(remote.Source, http);
        var digests = new Dictionary<string, TensorDigest>();
        var gate = new Lock();
        await Parallel.ForEachAsync(tensors, new ParallelOptions { MaxDegreeOfParallelism = parallelism, CancellationToken = ct },
            async (t, token) =>
            {
                using var hash = new HashingStream();
                if (t.Length > 0) await source.CopyAsync(t, 0, hash, n => counter.Add(n), token).ConfigureAwait(false);
                if (hash.Length != t.Length)
                    throw new WeightFetchException($"{source.Name}: tensor '{t.Name}': {hash.Length} of {t.Length} bytes arrived");
                lock (gate) digests[t.Name] = new TensorDigest(hash.HexDigest(), t.Length);
            }).ConfigureAwait(false);
        return new TensorManifest(remote.Source.Key, digests);
    }
}
