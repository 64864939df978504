using Swarm.Model;

namespace Swarm.Weights;

/// <summary>What to pull: the tensors of layers [Start, End) of a source, into a local folder.</summary>
public sealed record StagePullRequest
{
    /// <summary>The repository revision to pull from.</summary>
    public required ModelSource Source { get; init; }
    /// <summary>First layer (inclusive).</summary>
    public required int Start { get; init; }
    /// <summary>Last layer (exclusive).</summary>
    public required int End { get; init; }
    /// <summary>Folder the checkpoint is written to.</summary>
    public required string OutDir { get; init; }
    /// <summary>Other servers with the same files, tried in order when the source fails or sends bad bytes; default none.</summary>
    public IReadOnlyList<ModelSource> Mirrors { get; init; } = [];
    /// <summary>
    /// Other nodes of the swarm that may hold the stage's tensors, asked before the source and its mirrors; default
    /// none. Whatever they send is verified against the manifest like any other source's bytes.
    /// </summary>
    public IReadOnlyList<ITensorSource> Peers { get; init; } = [];
    /// <summary>The manifest to verify against; default: the one cached for the source, if any.</summary>
    public TensorManifest? Manifest { get; init; }
    /// <summary>Tensors downloaded at once; default 4.</summary>
    public int Parallelism { get; init; } = 4;
}

/// <summary>The outcome of a pull.</summary>
/// <param name="Directory">The checkpoint folder written.</param>
/// <param name="TensorCount">Tensors in it.</param>
/// <param name="TensorBytes">Bytes of those tensors.</param>
/// <param name="BytesDownloaded">Bytes received for them in this pull (the rest came from the cache).</param>
/// <param name="Verified">True when every tensor was checked against a manifest; false when none was available.</param>
public sealed record StagePullResult(string Directory, int TensorCount, long TensorBytes, long BytesDownloaded, bool Verified)
{
    /// <summary>The blob digest of each tensor pulled, by name (what a node then shares with its peers).</summary>
    public IReadOnlyDictionary<string, string> Digests { get; init; } = new Dictionary<string, string>();
}

/// <summary>
/// Pulls one pipeline stage's weights: reads the source's metadata and the headers of the files that hold the stage's
/// tensors, fetches just those tensors (layers [A, B), plus the embedding when A is 0 and the final norm and head when B
/// is the last layer) into the cache, and writes them as a checkpoint folder the engine loads unchanged.
/// </summary>
public sealed class StageCheckpointPuller(HttpRangeReader http, WeightCache cache)
{
    /// <summary>Pulls the stage; an interrupted pull, run again, continues where it stopped.</summary>
    /// <exception cref="ArgumentException">The layer range is not inside the model.</exception>
    /// <exception cref="WeightFetchException">Fetching, verifying or writing failed (the message names what and where).</exception>
    /// <exception cref="Swarm.Model.CheckpointException">The source's config, index or a header is malformed or lies.</exception>
    public async Task<StagePullResult> PullAsync(StagePullRequest request, IProgress<(long done, long total)>? progress = null,
        CancellationToken ct = default)
    {
        var remote = await RemoteCheckpoint.OpenAsync(request.Source, http, ct).ConfigureAwait(false);
        int layers = remote.Config.NumLayers;
        if (request.Start < 0 || request.End > layers || request.Start >= request.End)
            throw new ArgumentException($"layers {request.Start}:{request.End} are not a range inside the model's 0:{layers}");
        var tensors = await remote.LocateAsync(NeoXTensorNames.ForStage(remote.Config, request.Start, request.End), ct).ConfigureAwait(false);
        var manifest = request.Manifest ?? cache.LoadManifest(request.Source.Key);
        if (manifest is not null && manifest.Source != request.Source.Key)
            throw new WeightFetchException($"the manifest was computed for {manifest.Source}, not for {request.Source.Key}");
        ITensorSource[] sources = [.. request.Peers, new HttpTensorSource(request.Source, http), .. request.Mirrors.Select(m => new HttpTensorSource(m, http))];
        var fetcher = new TensorFetcher(cache, sources, request.Parallelism);
        var digests = await fetcher.FetchAsync(request.Source.Key, tensors, manifest, progress, ct).ConfigureAwait(false);
        string weights = await CheckpointMaterializer.WriteAsync(request.OutDir, remote, tensors, digests, cache, ct).ConfigureAwait(false);
        return new StagePullResult(Path.GetDirectoryName(weights)!, tensors.Count, tensors.Sum(t => t.Length), fetcher.BytesDownloaded, manifest is not null)
        {
            Digests = digests,
        };
    }
}
