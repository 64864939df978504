using Swarm.Cli;
using Swarm.Model;
using Swarm.Tests.Integration;
using Swarm.Tests.Model;
using Swarm.Tests.Presets;
using Swarm.Weights;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Weights;

/// <summary>
/// Peers as weight sources, with real processes: a coordinator started with <c>--model-url</c> on a local hub-layout
/// server, two nodes that fetched layers 0:3 and 3:6 from it, and a third node joining for 3:6, each with its own cache.
/// </summary>
[Collection("processes")]
public sealed class JoinFromPeersTests(ITestOutputHelper output) : IDisposable
{
    private const string Repo = "EleutherAI/pythia-test";
    private const string Revision = "step143000";
    private readonly TempDir _tmp = new();

    private async Task<HubTestServer> ServeAsync(Fixture fx)
    {
        var server = await HubTestServer.StartAsync();
        server.AddFolder(Repo, Revision, fx.CheckpointDir);
        using var client = HttpRangeReader.CreateHttpClient();
        var http = new HttpRangeReader(client);
        var source = ModelSource.Parse(server.RepoUrl(Repo), Revision);
        var manifest = await TensorManifestBuilder.BuildAsync(await RemoteCheckpoint.OpenAsync(source, http), http);
        new WeightCache(Path.Combine(_tmp.Sub("coordinator"), "weights")).SaveManifest(manifest);
        return server;
    }

    private LocalSwarmOptions Options(HubTestServer server, IReadOnlyList<IReadOnlyList<string>>? perNodeArgs = null) => new()
    {
        ModelUrl = server.RepoUrl(Repo), CoordinatorArgs = ["--revision", Revision], NodesFetchWeights = true,
        Nodes = 2, Layers = ["0:3", "3:6"], WireDtype = "f32", ThreadsPerNode = 1, LogDir = _tmp.Sub("logs"), PerNodeArgs = perNodeArgs,
        Environment = new Dictionary<string, string> { ["SWARM_CACHE"] = Path.Combine(_tmp.Path, "{process}") },
    };

    /// <summary>Starts node-3 pinned to 3:6 and waits until the coordinator lists it serving; returns its log.</summary>
    private async Task<string> JoinThirdNodeAsync(LocalSwarm swarm)
    {
        int third = swarm.AddNode("3:6");
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        while (true)
        {
            Assert.False(swarm.NodeProcesses[third]!.HasExited, "node-3 exited:\n" + File.ReadAllText(Path.Combine(swarm.LogDir, "node-3.log")));
            var status = await swarm.GetJsonAsync("/api/swarm", timeout.Token);
            if (status!["nodes"]!.AsArray().Any(n => (string?)n!["name"] == "node-3" && (string?)n["state"] == "serving")) break;
            await Task.Delay(200, timeout.Token);
        }
        string log = File.ReadAllText(Path.Combine(swarm.LogDir, "node-3.log"));
        output.WriteLine(log);
        return log;
    }

    /// <summary>Bytes of the tensors of layers 3:6 (with the head), and what node-3's cache holds.</summary>
    private (long StageBytes, int StageTensors, long Cached, int Blobs) Node3Cache(Fixture fx)
    {
        var all = WeightTestData.Tensors(fx.CheckpointDir);
        var names = NeoXTensorNames.ForStage(ModelConfig.Load(fx.CheckpointDir), 3, 6).ToList();
        var blobs = Directory.GetFiles(Path.Combine(_tmp.Path, "node-3", "weights", "blobs", "sha256"));
        return (names.Sum(n => all[n].Length), names.Count, blobs.Sum(b => new FileInfo(b).Length), blobs.Length);
    }

    [Fact]
    public async Task SecondNodeForTheSameRange_FetchesFromTheFirst_TheServerSeesNoSecondDownload()
    {
        using var fx = new Fixture(Fixture.Small);
        await using var server = await ServeAsync(fx);
        await using var swarm = await LocalSwarm.StartAsync(Options(server), output.WriteLine);
        server.ResetCounters();

        string log = await JoinThirdNodeAsync(swarm);

        Assert.Contains("asking 1 peer(s) first", log);
        Assert.Equal(0, server.DataBytesServed); // config, index and headers only
        var cache = Node3Cache(fx);
        Assert.Equal((cache.StageBytes, cache.StageTensors), (cache.Cached, cache.Blobs));
        // node-2 goes: layers 3:6 are served by node-3 alone, with the tensors it got from node-2.
        Assert.Equal(0, swarm.StopNode(1, TimeSpan.FromSeconds(30)));
        await swarm.WaitCoveredAsync(TimeSpan.FromSeconds(30));
        for (int p = 0; p < fx.PromptCount; p++)
        {
            var expected = fx.Ids($"greedy.{p}");
            var got = SwarmIntegrationTests.Tokens(await SwarmIntegrationTests.CompleteAsync(swarm.HttpUrl, fx.Ids($"prompt.{p}"), expected.Length));
            Assert.Equal(expected, got);
        }
    }

    [Fact]
    public async Task NodeStartedWithNoShare_IsNotAskedForItsTensors_TheJoiningNodeDownloadsThem()
    {
        using var fx = new Fixture(Fixture.Small);
        await using var server = await ServeAsync(fx);
        await using var swarm = await LocalSwarm.StartAsync(Options(server, perNodeArgs: [[], ["--no-share"]]), output.WriteLine);
        server.ResetCounters();

        string log = await JoinThirdNodeAsync(swarm);

        Assert.DoesNotContain("peer(s) first", log);
        var cache = Node3Cache(fx);
        Assert.Equal(cache.StageBytes, server.DataBytesServed);
        Assert.Equal((cache.StageBytes, cache.StageTensors), (cache.Cached, cache.Blobs));
    }

    public void Dispose() => _tmp.Dispose();
}
