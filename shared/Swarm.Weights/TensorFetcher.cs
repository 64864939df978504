namespace Swarm.Weights;

/// <summary>
/// Brings tensors into the <see cref="WeightCache"/>, several at a time: a tensor already in the cache is not fetched
/// again; a partial download continues where it stopped; a completed download is hashed and checked against the
/// manifest before it becomes a blob. On a mismatch or a failing source the tensor is fetched from the next source;
/// a source that failed transiently (<see cref="WeightFetchException.IsTransient"/>) is asked once more at the end;
/// when none is left the error names the tensor and what each source did.
/// </summary>
internal sealed class TensorFetcher
{
    private readonly WeightCache _cache;
    private readonly IReadOnlyList<ITensorSource> _sources;
    private readonly int _parallelism;
    private long _downloaded;

    /// <param name="cache">Where tensors go.</param>
    /// <param name="sources">Tried in order for each tensor; at least one.</param>
    /// <param name="parallelism">Tensors fetched at once; default 4.</param>
    public TensorFetcher(WeightCache cache, IReadOnlyList<ITensorSource> sources, int parallelism = 4)
    {
        if (sources.Count == 0) throw new ArgumentException("at least one source is needed", nameof(sources));
        ArgumentOutOfRangeException.ThrowIfLessThan(parallelism, 1);
        _cache = cache; _sources = sources; _parallelism = parallelism;
    }

    /// <summary>Bytes received from sources so far (not counting what was already cached).</summary>
    public long BytesDownloaded => Interlocked.Read(ref _downloaded);

    /// <summary>
    /// Makes every tensor available as a blob and returns each one's digest, by name. With a manifest every tensor is
    /// verified against it; without one (<paramref name="manifest"/> null) the digests are recorded as first seen.
    /// Progress counts bytes of the tensors (cached ones at once).
    /// </summary>
    /// <param name="sourceKey">The source the tensors belong to (<see cref="ModelSource.Key"/>): keys partial downloads and refs.</param>
    /// <exception cref="WeightFetchException">A tensor could not be fetched or verified, or the cache could not be written.</exception>
    public async Task<IReadOnlyDictionary<string, string>> FetchAsync(string sourceKey, IReadOnlyList<RemoteTensor> tensors,
        TensorManifest? manifest, IProgress<(long done, long total)>? progress = null, CancellationToken ct = default)
    {
        foreach (var t in tensors) CheckAgainstManifest(t, manifest);
        var counter = new ProgressCounter(progress, tensors.Sum(t => t.Length));
        var digests = new Dictionary<string, string>();
        var gate = new Lock();
        // Largest first: the long downloads start early and small ones fill the gaps.
        await Parallel.ForEachAsync(tensors.OrderByDescending(t => t.Length),
            new ParallelOptions { MaxDegreeOfParallelism = _parallelism, CancellationToken = ct },
            async (t, token) =>
            {
                string sha = await FetchOneAsync(sourceKey, t, manifest?.Find(t.Name)?.Sha256, counter, token).ConfigureAwait(false);
                lock (gate) digests[t.Name] = sha;
            }).ConfigureAwait(false);
        return digests;
    }

    private static void CheckAgainstManifest(RemoteTensor t, TensorManifest? manifest)
    {
        if (manifest is null) return;
        var d = manifest.Find(t.Name)
            ?? throw new WeightFetchException($"tensor '{t.Name}' is not in the manifest of {manifest.Source}; the manifest belongs to another checkpoint");
        if (d.Length != t.Length)
            throw new WeightFetchException($"tensor '{t.Name}': the header of {t.File} gives {t.Length} bytes but the manifest {d.Length}; " +
                                           "the file changed since the manifest was computed, or its header lies");
    }

    private async Task<string> FetchOneAsync(string sourceKey, RemoteTensor t, string? expected, ProgressCounter counter, CancellationToken ct)
    {
        string? known = expected ?? _cache.ReadRef(sourceKey, t.Name);
        if (known is not null && _cache.HasBlob(known, t.Length))
        {
            counter.Add(t.Length);
            return known;
        }
        string partial = _cache.PartialPath(sourceKey, t.Name);
        try { return await FetchFromSourcesAsync(sourceKey, t, expected, partial, counter, ct).ConfigureAwait(false); }
        catch (IOException e)
        {
            // The network side reports its failures as WeightFetchException: an IOException is the local disk, and no
            // other source helps with that.
            throw new WeightFetchException($"cannot write {partial}: {e.Message} — is the disk full? (SWARM_CACHE chooses the cache folder)", e);
        }
    }

    private async Task<string> FetchFromSourcesAsync(string sourceKey, RemoteTensor t, string? expected, string partial,
        ProgressCounter counter, CancellationToken ct)
    {
        var failures = new List<string>();
        var later = new List<ITensorSource>();
        // First every source in order; then, once, the sources that failed in a way that may pass (a peer still
        // fetching the tensor itself, or over its rate limit), after a pause.
        foreach (var source in _sources)
        {
            var outcome = await TryOneSourceAsync(source, sourceKey, t, expected, partial, counter, failures, ct).ConfigureAwait(false);
            if (outcome.Sha is { } sha) return sha;
            if (outcome.Transient) later.Add(source);
        }
        foreach (var source in later)
        {
            await Task.Delay(RetryPause, ct).ConfigureAwait(false);
            if ((await TryOneSourceAsync(source, sourceKey, t, expected, partial, counter, failures, ct).ConfigureAwait(false)).Sha is { } sha) return sha;
        }
        throw new WeightFetchException($"tensor '{t.Name}' ({t.Length} bytes of {t.File}) could not be fetched and verified: {string.Join("; ", failures)}");
    }

    /// <summary>How long the fetcher waits before it asks a source that failed transiently once more (1 s).</summary>
    public static readonly TimeSpan RetryPause = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Fetches the tensor from one source and verifies it: its digest when it verified (and is committed), else null
    /// with the failure added to <paramref name="failures"/> and whether it may pass later.
    /// </summary>
    private async Task<(string? Sha, bool Transient)> TryOneSourceAsync(ITensorSource source, string sourceKey, RemoteTensor t, string? expected,
        string partial, ProgressCounter counter, List<string> failures, CancellationToken ct)
    {
        // A partial may hold bytes of an earlier source: if the result does not verify, this source gets one clean try.
        for (int attempt = 0; attempt < 2; attempt++)
        {
            long resumedFrom;
            try { resumedFrom = await DownloadAsync(source, t, partial, counter, ct).ConfigureAwait(false); }
            catch (WeightFetchException e)
            {
                failures.Add($"{source.Name}: {e.Message}");
                return (null, e.IsTransient);
            }
            string sha = await WeightCache.HashFileAsync(partial, ct).ConfigureAwait(false);
            if (expected is null || sha == expected)
            {
                Commit(partial, sha, t, sourceKey, expected is null);
                return (sha, false);
            }
            File.Delete(partial);
            counter.Add(-t.Length);
            if (resumedFrom > 0) continue;
            failures.Add($"{source.Name}: SHA-256 mismatch (received {sha[..16]}…, the manifest says {expected[..16]}…)");
            break;
        }
        return (null, false);
    }

    /// <summary>Downloads the rest of the tensor into its partial file; returns how many bytes were already there.</summary>
    private async Task<long> DownloadAsync(ITensorSource source, RemoteTensor t, string partial, ProgressCounter counter, CancellationToken ct)
    {
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(partial)!);
            await using var file = new FileStream(partial, FileMode.OpenOrCreate, FileAccess.Write, FileShare.None, 1 << 16, useAsync: true);
            long have = file.Length;
            if (have > t.Length) { file.SetLength(0); have = 0; }
            file.Position = have;
            counter.Add(have);
            if (have < t.Length)
            {
                await source.CopyAsync(t, have, file, n =>
                {
                    Interlocked.Add(ref _downloaded, n);
                    counter.Add(n);
                }, ct).ConfigureAwait(false);
            }
            await file.FlushAsync(ct).ConfigureAwait(false);
            if (file.Length != t.Length)
                throw new WeightFetchException($"{source.Name} sent {file.Length - have} bytes of tensor '{t.Name}' where {t.Length - have} were due");
            return have;
        }
        catch (WeightFetchException)
        {
            counter.Add(-PartialLength(partial)); // what is kept is counted again when the download resumes
            throw;
        }
    }

    private void Commit(string partial, string sha, RemoteTensor t, string sourceKey, bool recordRef)
    {
        try
        {
            _cache.CommitBlob(partial, sha);
            if (recordRef) _cache.WriteRef(sourceKey, t.Name, sha);
        }
        catch (IOException e)
        {
            throw new WeightFetchException($"cannot store tensor '{t.Name}' in {_cache.Root}: {e.Message} — is the disk full?", e);
        }
    }

    private static long PartialLength(string partial) => new FileInfo(partial) is { Exists: true } f ? f.Length : 0;
}
