using Microsoft.Extensions.Logging.Abstractions;
using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Routing;
using Swarm.Node.Sharing;
using Swarm.Protocol;
using Swarm.Tests.Coordinator;
using Swarm.Tests.Presets;
using Swarm.Weights;
using Xunit;

namespace Swarm.Tests.Weights;

/// <summary>
/// The decision parts of weight sharing, without a network: the upload budget, what a node answers to a tensor
/// request, which peers the coordinator names, and a move that keeps the old range routable until the new one is ready.
/// </summary>
public sealed class WeightSharingTests : IDisposable
{
    private readonly TempDir _tmp = new();

    [Fact]
    public void UploadRateLimiter_PaysASecondsBurstAtOnce_ThenWaits_AndRefusesBeyondTheAllowedWait()
    {
        var clock = new ManualTimeProvider();
        var limiter = new UploadRateLimiter(1000, clock);
        Assert.Equal(TimeSpan.Zero, limiter.TryReserve(1000, TimeSpan.FromSeconds(2)));
        Assert.Equal(TimeSpan.FromSeconds(0.5), limiter.TryReserve(500, TimeSpan.FromSeconds(2)));
        // 1.5 s of debt would be 2 s with another 500 bytes: allowed at 2 s, refused at 1 s (and nothing reserved).
        Assert.Null(limiter.TryReserve(1500, TimeSpan.FromSeconds(1)));
        Assert.Equal(TimeSpan.FromSeconds(1), limiter.TryReserve(500, TimeSpan.FromSeconds(2)));
        clock.Advance(TimeSpan.FromSeconds(10));
        Assert.Equal(TimeSpan.Zero, limiter.TryReserve(1000, TimeSpan.Zero)); // refilled, but never beyond one second's worth
        Assert.Null(limiter.TryReserve(1, TimeSpan.Zero));
    }

    [Fact]
    public async Task ShareServer_ServesOnlySharedBlobs_InChunks_AndSaysWhyNot()
    {
        var cache = new WeightCache(_tmp.Sub("cache"));
        byte[] bytes = Enumerable.Range(0, 3000).Select(i => (byte)(i * 7)).ToArray();
        string sha = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes));
        string part = Path.Combine(_tmp.Path, "t.part");
        File.WriteAllBytes(part, bytes);
        cache.CommitBlob(part, sha);
        var share = new TensorShareServer(cache, new UploadRateLimiter(1 << 20), NullLogger.Instance);
        var ask = new TensorRequest { Sha256 = sha, Offset = 1000, Length = 4096 };

        var notYet = Assert.IsType<ErrorReply>(await share.ChunkAsync(ask, default));
        Assert.Equal(ErrorCode.RangeNotLoaded, notYet.Code); // in the cache, but not offered: never served

        share.Share([new TensorDigest(sha, bytes.Length)]);
        var chunk = Assert.IsType<TensorChunk>(await share.ChunkAsync(ask, default));
        Assert.Equal((1000L, 3000L), (chunk.Offset, chunk.TotalLength));
        Assert.Equal(bytes[1000..], chunk.Data); // fewer bytes than asked: the tensor's end
        Assert.Equal(ErrorCode.BadRequest, Assert.IsType<ErrorReply>(await share.ChunkAsync(ask with { Offset = 3000 }, default)).Code);

        var noShare = new TensorShareServer(cache, limiter: null, NullLogger.Instance);
        noShare.Share([new TensorDigest(sha, bytes.Length)]);
        var refused = Assert.IsType<ErrorReply>(await noShare.ChunkAsync(ask, default));
        Assert.Equal(ErrorCode.Unauthorized, refused.Code);
        Assert.Contains("--no-share", refused.Message);

        var slow = new TensorShareServer(cache, new UploadRateLimiter(100), NullLogger.Instance);
        slow.Share([new TensorDigest(sha, bytes.Length)]);
        var busy = Assert.IsType<ErrorReply>(await slow.ChunkAsync(ask with { Length = 1000 }, default)); // 9 s of budget: refused at once
        Assert.Equal(ErrorCode.Overloaded, busy.Code);
    }

    private static NodeInfo Info(int id, bool shares = true) => new()
    {
        Id = id, Name = $"node-{id}", Endpoint = $"127.0.0.1:{7800 + id}", MemoryBudgetBytes = 1 << 30, LayerThroughput = 100, SharesWeights = shares,
    };

    [Fact]
    public void WeightPeers_AreSharingServingNodesWithOverlappingRanges_MostSharedLayersFirst()
    {
        var registry = new NodeRegistry(new FailureDetectorOptions(), new ManualTimeProvider());
        void Serving(NodeInfo info, LayerRange range)
        {
            registry.Register(info);
            registry.AssignRange(info.Id, range);
            registry.MarkServing(info.Id);
        }
        Serving(Info(1), new LayerRange(0, 3));
        Serving(Info(2), new LayerRange(2, 6));
        Serving(Info(3, shares: false), new LayerRange(3, 6));
        Serving(Info(4), new LayerRange(4, 5));
        registry.Register(Info(5));
        registry.AssignRange(5, new LayerRange(3, 6)); // loading: holds nothing yet
        registry.Register(Info(6));

        Assert.Equal(["127.0.0.1:7802", "127.0.0.1:7804"], WeightPeers.For(registry.Snapshot(), 6, new LayerRange(3, 6)));
        Assert.Equal(["127.0.0.1:7801", "127.0.0.1:7802"], WeightPeers.For(registry.Snapshot(), 6, new LayerRange(0, 3)));
        Assert.Empty(WeightPeers.For(registry.Snapshot(), 1, new LayerRange(0, 1))); // never itself
    }

    [Fact]
    public void Move_KeepsTheOldRangeRoutable_UntilTheNewRangeIsReady()
    {
        var registry = new NodeRegistry(new FailureDetectorOptions(), new ManualTimeProvider());
        registry.Register(Info(1));
        registry.AssignRange(1, new LayerRange(0, 3));
        Assert.Null(RouteCandidate.From(registry.Get(1)!)); // a first load: nothing to route through yet
        registry.MarkServing(1);

        var moving = registry.AssignRange(1, new LayerRange(3, 6))!;
        Assert.Equal(NodeStatus.Loading, moving.State);
        Assert.Equal(new LayerRange(3, 6), moving.ToPlacementNode().Range); // placement counts the range it is getting
        Assert.Equal(new LayerRange(0, 3), RouteCandidate.From(moving)!.Range); // jobs still go through the one it serves
        Assert.True(registry.ServingCoverage(6).Replicas.Take(3).All(r => r == 1));
        Assert.True(registry.ServingCoverage(6).Replicas.Skip(3).All(r => r == 0));

        var moved = registry.MarkServing(1)!;
        Assert.Null(moved.ServedRange);
        Assert.Equal(new LayerRange(3, 6), RouteCandidate.From(moved)!.Range);
    }

    [Fact]
    public void UpdateThroughput_ReplacesTheAnnouncedBenchmark_IgnoringNonsense()
    {
        var registry = new NodeRegistry(new FailureDetectorOptions(), new ManualTimeProvider());
        registry.Register(Info(1) with { LayerThroughput = 1e-3 });
        Assert.Equal(2500, registry.UpdateThroughput(1, 2500)!.Info.LayerThroughput);
        Assert.Equal(2500, registry.UpdateThroughput(1, double.NaN)!.Info.LayerThroughput);
        Assert.Equal(2500, registry.UpdateThroughput(1, 0)!.Info.LayerThroughput);
    }

    public void Dispose() => _tmp.Dispose();
}
