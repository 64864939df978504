using Microsoft.Extensions.Logging;
using Swarm.Checkpoints;
using Swarm.Protocol;
using Swarm.Weights;

namespace Swarm.Node;

/// <summary>
/// For a node started without <c>--model</c>: fetches the tensors of an assigned range from the swarm's model source
/// (announced in <see cref="Welcome.ModelSource"/>) into the weight cache, checks each against the digests the
/// coordinator sent with the assignment (<see cref="AssignRange.Tensors"/>), and opens the materialised folder.
/// A tensor that does not verify is never used: the fetch fails naming it.
/// </summary>
internal sealed class AssignedStageFetcher(WeightCache cache, ILogger logger)
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
        await _oneAtATime.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            logger.Fetching(range.ToString(), source.Key, digests.Count);
            using var client = HttpRangeReader.CreateHttpClient();
            var puller = new StageCheckpointPuller(new HttpRangeReader(client), cache);
            var progress = Console.IsErrorRedirected ? null : new ConsoleProgress($"fetching layers {range}");
            var result = await puller.PullAsync(new StagePullRequest
            {
                Source = source, Start = range.Start, End = range.End, OutDir = dir, Manifest = manifest,
            }, progress, ct).ConfigureAwait(false);
            logger.Fetched(range.ToString(), result.Directory, result.TensorBytes / 1e6, result.BytesDownloaded / 1e6);
            return Checkpoint.Open(result.Directory);
        }
        finally { _oneAtATime.Release(); }
    }
}
