using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Swarm.Model;
using Swarm.Node.Sharing;
using Swarm.Protocol;
using Swarm.Tests.Model;
using Swarm.Tests.Presets;
using Swarm.Transport;
using Swarm.Weights;
using Xunit;

namespace Swarm.Tests.Weights;

/// <summary>
/// A node fetching a stage from a peer and the model's URL, in-process over the real transport and a real HTTP server:
/// whatever either source sends is checked against the manifest, and a tensor that fails is fetched from another
/// source. Tensors travel in many chunks (1000 bytes per request here).
/// </summary>
public sealed class PeerFetchTests : IDisposable
{
    private const string Repo = "EleutherAI/pythia-test";
    private const string Revision = "step143000";
    private readonly TempDir _tmp = new();

    /// <summary>A peer that pulled layers 3:6 from the (then clean) server and shares them over its own transport.</summary>
    private sealed record Setup(Fixture Fx, HubTestServer Server, HttpClient Client, HttpRangeReader Http, ModelSource Source, TensorManifest Manifest,
        IReadOnlyList<RemoteTensor> Stage, RemoteTensor Victim, WeightCache PeerCache, TensorShareServer Share) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await Server.DisposeAsync();
            Client.Dispose();
            Fx.Dispose();
        }
    }

    private async Task<Setup> StartAsync()
    {
        var fx = new Fixture(Fixture.Small);
        var server = await HubTestServer.StartAsync();
        server.AddFolder(Repo, Revision, fx.CheckpointDir);
        var client = HttpRangeReader.CreateHttpClient();
        var http = new HttpRangeReader(client);
        var source = ModelSource.Parse(server.RepoUrl(Repo), Revision);
        var remote = await RemoteCheckpoint.OpenAsync(source, http);
        var manifest = await TensorManifestBuilder.BuildAsync(remote, http);
        var peerCache = new WeightCache(_tmp.Sub("peer"));
        await new StageCheckpointPuller(http, peerCache).PullAsync(new StagePullRequest
        {
            Source = source, Start = 3, End = 6, OutDir = _tmp.Sub("peer-stage"), Manifest = manifest,
        });
        var stage = await remote.LocateAsync(NeoXTensorNames.ForStage(ModelConfig.Load(fx.CheckpointDir), 3, 6));
        var victim = stage.First(t => t.Name.Contains(".4.", StringComparison.Ordinal) && t.Name.EndsWith("dense_h_to_4h.weight", StringComparison.Ordinal));
        var share = new TensorShareServer(peerCache, new UploadRateLimiter(64 << 20), NullLogger.Instance);
        server.ResetCounters();
        return new Setup(fx, server, client, http, source, manifest, stage, victim, peerCache, share);
    }

    /// <summary>Answers tensor requests arriving at <paramref name="transport"/> until it is disposed.</summary>
    private static async Task ServeAsync(ITransport transport, TensorShareServer share)
    {
        await foreach (var m in transport.Inbound.ReadAllAsync())
            if (m.Envelope.Body is TensorRequest r) share.Handle(m.Peer, m.Envelope, r, CancellationToken.None);
    }

    /// <summary>Fetches the stage into a fresh cache from [the peer, the URL]; checks every tensor landed verified.</summary>
    private async Task FetchAndCheckAsync(Setup s, ITensorSource url)
    {
        await using var peerTransport = LiteNetTransport.Start(new TransportOptions { BindAddress = IPAddress.Loopback, Port = 0 });
        var serving = ServeAsync(peerTransport, s.Share);
        await using (var askerTransport = LiteNetTransport.Start(new TransportOptions { BindAddress = IPAddress.Loopback, Port = 0 }))
        {
            var digests = s.Stage.ToDictionary(t => t.Name, t => s.Manifest.Find(t.Name)!.Sha256);
            var peer = new PeerTensorSource(askerTransport, peerTransport.LocalEndPoint, digests, chunkBytes: 1000);
            var cache = new WeightCache(_tmp.Sub("asker"));
            var got = await new TensorFetcher(cache, [peer, url]).FetchAsync(s.Source.Key, s.Stage, s.Manifest);
            foreach (var t in s.Stage)
            {
                Assert.Equal(s.Manifest.Find(t.Name)!.Sha256, got[t.Name]);
                Assert.Equal(File.ReadAllBytes(Path.Combine(s.Fx.CheckpointDir, t.File)).AsSpan((int)t.Offset, (int)t.Length).ToArray(),
                    File.ReadAllBytes(cache.BlobPath(got[t.Name])));
            }
        }
        await peerTransport.DisposeAsync();
        await serving;
    }

    [Fact]
    public async Task CorruptedByteInTheServedFile_IsCaughtByTheManifest_AndTheTensorRefetchedFromAPeer()
    {
        await using var s = await StartAsync();
        s.Server.FileBytes(Repo, Revision, s.Victim.File)[s.Victim.Offset + s.Victim.Length / 2] ^= 0x40;
        // The peer offers every tensor but the victim at first (it is still fetching that one, as a node that joined a
        // moment earlier would be); it has it by the time the URL's copy failed verification.
        s.Share.Share(s.Stage.Where(t => t != s.Victim).Select(t => s.Manifest.Find(t.Name)!));
        var url = new CallbackSource(new HttpTensorSource(s.Source, s.Http), t =>
        {
            if (t.Name == s.Victim.Name) s.Share.Share([s.Manifest.Find(t.Name)!]);
        });

        await FetchAndCheckAsync(s, url);

        // The server sent the victim's bytes (the corrupted copy) and nothing else; the peer sent every tensor, in chunks.
        Assert.Equal(s.Victim.Length, s.Server.DataBytesServed);
        Assert.Equal(s.Stage.Sum(t => t.Length), s.Share.BytesServed);
        Assert.Equal(s.Stage.Sum(t => (t.Length + 999) / 1000), s.Share.ChunksServed);
    }

    [Fact]
    public async Task PeerSendingBadBytes_IsCaughtByTheManifest_AndTheTensorRefetchedFromTheUrl()
    {
        await using var s = await StartAsync();
        s.Share.Share(s.Stage.Select(t => s.Manifest.Find(t.Name)!));
        string blob = s.PeerCache.BlobPath(s.Manifest.Find(s.Victim.Name)!.Sha256);
        var bytes = File.ReadAllBytes(blob);
        bytes[bytes.Length / 3] ^= 0x01; // damaged on the peer's disk: it serves it unknowingly
        File.WriteAllBytes(blob, bytes);

        await FetchAndCheckAsync(s, new HttpTensorSource(s.Source, s.Http));

        var served = s.Server.Log.Where(x => x.Status == 206 && x.End - x.Begin > 8).ToList();
        Assert.Equal(s.Victim.Length, s.Server.DataBytesServed);
        Assert.All(served, x => Assert.True(x.Begin >= s.Victim.Offset && x.End <= s.Victim.Offset + s.Victim.Length, $"served {x.Begin}-{x.End}"));
    }

    /// <summary>A source that calls <paramref name="after"/> once it sent a tensor (a test's hook into the timeline).</summary>
    private sealed class CallbackSource(ITensorSource inner, Action<RemoteTensor> after) : ITensorSource
    {
        public string Name => inner.Name;

        public async Task CopyAsync(RemoteTensor tensor, long offset, Stream destination, Action<int> onBytes, CancellationToken ct)
        {
            await inner.CopyAsync(tensor, offset, destination, onBytes, ct);
            after(tensor);
        }
    }

    public void Dispose() => _tmp.Dispose();
}
