using Microsoft.Extensions.Logging;
using Swarm.Checkpoints;
using Swarm.Node.Sharing;
using Swarm.Protocol;
using Swarm.Transport;
using Swarm.Weights;

namespace Swarm.Node;

/// <summary>
/// For a node started without <c>--model</c>: fetches the tensors of an assigned range into the weight cache — from
/// the peers the coordinator named (<see cref="AssignRange.Peers"/>) first, then from the swarm's model source
/// (announced in <see cref="Welcome.ModelSource"/>) — checks each against the digests the coordinator sent with the
/// assignment (<see cref="AssignRange.Tensors"/>), offers the verified tensors to other nodes, and opens the
/// materialised folder. A tensor that does not verify is never used: it is fetched from the next source, and the
/// fetch fails naming it when no source has good bytes.
/// </summary>
internal sealed class AssignedStageFetcher(WeightCache cache, TensorShareServer share, ITransport transport, string ownEndpoint, ILogger logger)
{
    private readonly SemaphoreSlim _oneAtATime = new(1, 1);

    /// <summary>Fetches (or finds in the cache) the tensors of <paramref name="assign"/>'s range and opens them as a checkpoint.</summary>
    /// <exception cref="WeightFetchException">A tensor could not be fetched or did not match its digest (the message names it).</exception>
    /// <exception cref="Swarm.Model.CheckpointException">The source's config, index or a header is malformed.</exception>
    /// <exception cref="ArgumentException">The source URL or the range is not valid for the source.</exception>
    public async Task<Checkpoint> FetchAsync(string sourceUrl, AssignRange assign, CancellationToken ct)
    {
        var source = ModelSource.Parse(sourceUrl);
        var digests = new Dictionary<string, TensorDigest>();
        foreach (var t in assign.Tensors) digests[t.Name] = new TensorDigest(t.Sha256, t.Length);
        var manifest = new TensorManifest(source.Key, digests);
        var range = assign.Range;
        string dir = Path.Combine(cache.Root, "stages", WeightCache.Sha256Hex(source.Key)[..32], $"{range.Start}-{range.End}");
        var peers = PeerSources(assign.Peers, digests.ToDictionary(d => d.Key, d => d.Value.Sha256));
        await _oneAtATime.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            logger.Fetching(range.ToString(), source.Key, digests.Count);
            if (peers.Count > 0) logger.FetchingFromPeers(range.ToString(), peers.Count, string.Join(", ", peers.Select(p => p.Name)), source.Key);
            using var client = HttpRangeReader.CreateHttpClient();
            var puller = new StageCheckpointPuller(new HttpRangeReader(client), cache);
            var progress = Console.IsErrorRedirected ? null : new ConsoleProgress($"fetching layers {range}");
            var result = await puller.PullAsync(new StagePullRequest
            {
                Source = source, Start = range.Start, End = range.End, OutDir = dir, Manifest = manifest, Peers = peers,
            }, progress, ct).ConfigureAwait(false);
            share.Share(result.Digests.Keys.Select(name => digests[name]));
            logger.Fetched(range.ToString(), result.Directory, result.TensorBytes / 1e6, result.BytesDownloaded / 1e6);
            return Checkpoint.Open(result.Directory);
        }
        finally { _oneAtATime.Release(); }
    }

    /// <summary>A source for each named peer that parses as an endpoint and is not this node.</summary>
    private List<ITensorSource> PeerSources(IEnumerable<string> endpoints, IReadOnlyDictionary<string, string> digests)
    {
        var sources = new List<ITensorSource>();
        foreach (var endpoint in endpoints.Distinct(StringComparer.Ordinal))
            if (endpoint != ownEndpoint && EndPoints.TryParse(endpoint, out var peer))
                sources.Add(new PeerTensorSource(transport, peer!, digests));
        return sources;
    }
}
