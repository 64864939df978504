using Swarm.Model;
using Swarm.Protocol;
using Swarm.Weights;

namespace Swarm.Coordinator.Service;

/// <summary>
/// The model source a coordinator started with <c>--model-url</c> announces to nodes: the repository revision, its
/// per-tensor SHA-256 manifest (computed once from the source and cached, then loaded from the cache), and a local
/// folder holding only the source's <c>config.json</c> and <c>tokenizer.json</c> — all the coordinator itself reads.
/// </summary>
internal sealed class PublishedModelSource
{
    /// <summary>The repository revision nodes fetch their tensors from.</summary>
    public ModelSource Source { get; }

    /// <summary>SHA-256 and length of every tensor of the source.</summary>
    public TensorManifest Manifest { get; }

    /// <summary>Folder with the source's config.json (and tokenizer.json when it has one), read like a <c>--model</c> folder.</summary>
    public string MetadataDirectory { get; }

    private PublishedModelSource(ModelSource source, TensorManifest manifest, string metadataDirectory)
    {
        Source = source; Manifest = manifest; MetadataDirectory = metadataDirectory;
    }

    /// <summary>
    /// Reads the source's config, tokenizer, index and safetensors headers (by range), and its manifest: from
    /// <paramref name="cache"/> when it was computed before, else by hashing every tensor once (the whole checkpoint
    /// is read — a one-time cost per source) and caching the result.
    /// </summary>
    /// <param name="log">Told what is happening (hashing a big source takes a while).</param>
    /// <exception cref="WeightFetchException">The source cannot be read, or its manifest does not match its headers.</exception>
    /// <exception cref="CheckpointException">The source's config, index or a header is malformed.</exception>
    public static async Task<PublishedModelSource> OpenAsync(ModelSource source, WeightCache cache, Action<string> log, CancellationToken ct = default)
    {
        using var client = HttpRangeReader.CreateHttpClient();
        var http = new HttpRangeReader(client);
        var remote = await RemoteCheckpoint.OpenAsync(source, http, ct).ConfigureAwait(false);
        var tensors = await remote.LocateAllAsync(ct).ConfigureAwait(false);
        var manifest = cache.LoadManifest(source.Key);
        if (manifest is null)
        {
            log($"computing the tensor manifest of {source.Key}: hashing {tensors.Count} tensors ({tensors.Sum(t => t.Length) / 1e6:F1} MB) once");
            manifest = await TensorManifestBuilder.BuildAsync(remote, http, ct: ct).ConfigureAwait(false);
            cache.SaveManifest(manifest);
            log($"tensor manifest cached at {cache.ManifestPath(source.Key)}");
        }
        foreach (var t in tensors)
        {
            if (manifest.Find(t.Name) is not { } d || d.Length != t.Length)
                throw new WeightFetchException($"the cached manifest {cache.ManifestPath(source.Key)} does not match tensor '{t.Name}' of {source.Key} " +
                                               "(the revision changed?); delete the file to compute it again");
        }
        string dir = Path.Combine(cache.Root, "sources", WeightCache.Sha256Hex(source.Key)[..32]);
        WeightCache.WriteAtomically(Path.Combine(dir, "config.json"), remote.ConfigJson);
        string tokenizer = Path.Combine(dir, "tokenizer.json");
        if (remote.TokenizerJson is { } tok) WeightCache.WriteAtomically(tokenizer, tok);
        else File.Delete(tokenizer);
        return new PublishedModelSource(source, manifest, dir);
    }

    /// <summary>The manifest entries of the tensors a node serving <paramref name="range"/> of <paramref name="config"/> holds.</summary>
    public TensorDigestEntry[] DigestsFor(ModelConfig config, LayerRange range) =>
        [.. NeoXTensorNames.ForStage(config, range.Start, range.End)
            .Select(name => Manifest.Find(name) is { } d ? new TensorDigestEntry { Name = name, Sha256 = d.Sha256, Length = d.Length } : null)
            .OfType<TensorDigestEntry>()];

    /// <summary>The name a repository URL serves its model under: its last path segment (e.g. <c>pythia-1.4b</c>).</summary>
    public string DefaultModelName => Source.Repository.Segments[^1].TrimEnd('/');
}
