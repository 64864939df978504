using Swarm.Model;
using Swarm.Node.Sharing;
using Swarm.Protocol;
using Swarm.Tests.Integration;
using Swarm.Tests.Model;
using Swarm.Tests.Node;
using Swarm.Tests.Presets;
using Swarm.Weights;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Weights;

/// <summary>
/// A node process without local files, driven by a coordinator that speaks the real protocol and decides nothing: it
/// is moved from layers 0:3 to 3:6 and keeps serving 0:3 while 3:6's tensors arrive, then switches.
/// </summary>
[Collection("processes")]
public sealed class MoveWhileServingTests(ITestOutputHelper output) : IDisposable
{
    private const string Repo = "EleutherAI/pythia-test";
    private const string Revision = "step143000";
    private readonly TempDir _tmp = new();

    [Fact]
    public async Task MovedNode_ServesItsOldRangeWhileFetchingTheNewOne_ThenSwitches()
    {
        using var fx = new Fixture(Fixture.Small);
        var config = ModelConfig.Load(fx.CheckpointDir);
        await using var server = await HubTestServer.StartAsync();
        server.AddFolder(Repo, Revision, fx.CheckpointDir);
        using var client = HttpRangeReader.CreateHttpClient();
        var http = new HttpRangeReader(client);
        var source = ModelSource.Parse(server.RepoUrl(Repo), Revision);
        var manifest = await TensorManifestBuilder.BuildAsync(await RemoteCheckpoint.OpenAsync(source, http), http);
        TensorDigestEntry[] Digests(int start, int end) => [.. NeoXTensorNames.ForStage(config, start, end)
            .Select(n => new TensorDigestEntry { Name = n, Sha256 = manifest.Find(n)!.Sha256, Length = manifest.Find(n)!.Length })];

        await using var coordinator = FakeCoordinator.Start(modelSource: source.Key);
        string self = $"127.0.0.1:{coordinator.EndPoint.Port}";
        await using var node = CliProcess.Start(SwarmProgram.Cli, new Dictionary<string, string> { ["SWARM_CACHE"] = _tmp.Sub("node") },
            "node", "--coordinator", self, "--name", "mover", "--threads", "1");
        try
        {
            var hello = await coordinator.NextAsync<Hello>(TimeSpan.FromSeconds(60));
            Assert.True(hello.SharesWeights);
            coordinator.SendToNode(new AssignRange { Range = new LayerRange(0, 3), AssignmentId = 1, Tensors = Digests(0, 3) });
            var first = await coordinator.NextAsync<RangeReady>(TimeSpan.FromSeconds(60));
            Assert.Equal((new LayerRange(0, 3), 1L), (first.Range, first.AssignmentId));

            // The move: this "coordinator" also poses as the one peer holding 3:6, and holds back its answers, so the
            // node's fetch of the new range stays in flight for as long as the test likes.
            server.ResetCounters();
            coordinator.SendToNode(new AssignRange { Range = new LayerRange(3, 6), AssignmentId = 2, Tensors = Digests(3, 6), Peers = [self] });
            await coordinator.WaitForTensorRequestAsync(TimeSpan.FromSeconds(30));

            var route = new[]
            {
                new Hop { NodeId = 1, Endpoint = hello.DataEndpoint, Layers = new LayerRange(0, 3) },
                new Hop { NodeId = 2, Endpoint = self, Layers = new LayerRange(3, 6) },
            };
            var prompt = fx.Ids("prompt.0");
            ForwardRequest Step(long session, Hop[] hops) => new()
            {
                JobId = session, SessionId = session, Step = 0, Kind = StepKind.Prefill, StartPosition = 0,
                Input = WireTensor.FromTokenIds(prompt), Route = hops, WireDType = WireDType.F32, Sampling = new SamplingParams(),
            };
            ForwardRequest? handedOn = null;
            for (long session = 100; session < 103; session++)
            {
                coordinator.SendToNode(Step(session, route));
                handedOn = await coordinator.NextAsync<ForwardRequest>(TimeSpan.FromSeconds(20));
                Assert.Equal((session, new LayerRange(3, 6)), (handedOn.SessionId, handedOn.Route[0].Layers));
            }
            var beat = await coordinator.NextAsync<Heartbeat>();
            Assert.Equal((NodeReadiness.Ready, (LayerRange?)new LayerRange(0, 3)), (beat.State, beat.Range));
            Assert.Equal(0, server.DataBytesServed); // nothing of 3:6 arrived yet: the steps above ran on the old range

            // The "peer" turns out not to hold the tensors: the node takes them from the URL, verifies them and switches
            // (well before a held request would have timed out).
            coordinator.AnswerTensorRequests(new ErrorReply { Code = ErrorCode.RangeNotLoaded, Message = "not held here" });
            var ready = await coordinator.NextAsync<RangeReady>(PeerTensorSource.ChunkTimeout / 2);
            Assert.Equal((new LayerRange(3, 6), 2L), (ready.Range, ready.AssignmentId));

            // The hidden states it produced on 0:3 during the move, run through 3:6 on the same node: the golden first token.
            coordinator.SendToNode(handedOn!);
            var token = await coordinator.NextAsync<TokenResult>(TimeSpan.FromSeconds(20));
            Assert.Equal(fx.Ids("greedy.0")[0], token.TokenId);
            coordinator.SendToNode(Step(200, route));
            Assert.Equal(ErrorCode.RangeNotLoaded, (await coordinator.NextAsync<StepFailed>(TimeSpan.FromSeconds(20))).Code);
        }
        finally
        {
            output.WriteLine(node.Output);
        }
    }

    public void Dispose() => _tmp.Dispose();
}
