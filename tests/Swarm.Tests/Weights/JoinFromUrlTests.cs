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
/// "Join with one command", with real processes: a coordinator started with <c>--model-url</c> on a local hub-layout
/// server, and nodes started with only <c>--coordinator</c> that fetch their layers from it, each with its own cache.
/// </summary>
[Collection("processes")]
public sealed class JoinFromUrlTests(ITestOutputHelper output) : IDisposable
{
    private const string Repo = "EleutherAI/pythia-test";
    private const string Revision = "step143000";
    private readonly TempDir _tmp = new();

    /// <summary>
    /// Serves the fixture and puts its manifest, computed from the unmodified bytes, in the coordinator's cache (the
    /// coordinator loads it instead of hashing the source again), then resets the server's counters.
    /// </summary>
    private async Task<HubTestServer> ServeAsync(Fixture fx)
    {
        var server = await HubTestServer.StartAsync();
        server.AddFolder(Repo, Revision, fx.CheckpointDir);
        using var client = HttpRangeReader.CreateHttpClient();
        var http = new HttpRangeReader(client);
        var source = ModelSource.Parse(server.RepoUrl(Repo), Revision);
        var manifest = await TensorManifestBuilder.BuildAsync(await RemoteCheckpoint.OpenAsync(source, http), http);
        new WeightCache(Path.Combine(_tmp.Sub("coordinator"), "weights")).SaveManifest(manifest);
        server.ResetCounters();
        return server;
    }

    private LocalSwarmOptions Options(HubTestServer server) => new()
    {
        ModelUrl = server.RepoUrl(Repo), CoordinatorArgs = ["--revision", Revision], NodesFetchWeights = true,
        Nodes = 2, Layers = ["0:3", "3:6"], WireDtype = "f32", ThreadsPerNode = 1, LogDir = _tmp.Sub("logs"),
        Environment = new Dictionary<string, string> { ["SWARM_CACHE"] = Path.Combine(_tmp.Path, "{process}") },
    };

    [Fact]
    public async Task TwoNodesWithoutLocalFiles_FetchOnlyTheirRanges_AndReturnTheGoldenGreedyTokens()
    {
        using var fx = new Fixture(Fixture.Small);
        await using var server = await ServeAsync(fx);
        var all = WeightTestData.Tensors(fx.CheckpointDir);
        var config = ModelConfig.Load(fx.CheckpointDir);

        await using (var swarm = await LocalSwarm.StartAsync(Options(server), output.WriteLine))
        {
            for (int p = 0; p < fx.PromptCount; p++)
            {
                var expected = fx.Ids($"greedy.{p}");
                var got = SwarmIntegrationTests.Tokens(await SwarmIntegrationTests.CompleteAsync(swarm.HttpUrl, fx.Ids($"prompt.{p}"), expected.Length));
                Assert.Equal(expected, got);
            }
        }

        // The server's log, range by range: every byte of tensor data it sent lies inside one tensor, and each stage's
        // tensors went out once (within 5 % of their bytes).
        var servedPerTensor = new Dictionary<string, long>();
        foreach (var s in server.Log.Where(s => s.Status == 206))
        {
            string file = Path.GetFileName(s.Path);
            var inside = all.Values.FirstOrDefault(t => t.File == file && s.Begin >= t.Offset && s.End <= t.Offset + t.Length);
            if (inside is null) continue; // a header or metadata read
            servedPerTensor[inside.Name] = servedPerTensor.GetValueOrDefault(inside.Name) + (s.End - s.Begin);
        }
        foreach (var (node, range) in new[] { ("node-1", (0, 3)), ("node-2", (3, 6)) })
        {
            var names = NeoXTensorNames.ForStage(config, range.Item1, range.Item2).ToList();
            long tensorBytes = names.Sum(n => all[n].Length);
            long served = names.Sum(n => servedPerTensor.GetValueOrDefault(n));
            // What the node's own cache holds: exactly its stage's tensors, nothing of the other stage.
            var blobs = Directory.GetFiles(Path.Combine(_tmp.Path, node, "weights", "blobs", "sha256"));
            long cached = blobs.Sum(b => new FileInfo(b).Length);
            output.WriteLine($"{node} layers {range}: {names.Count} tensors, {tensorBytes:N0} bytes; served {served:N0}; cached {blobs.Length} blobs, {cached:N0} bytes");
            Assert.InRange(served, tensorBytes, (long)(1.05 * tensorBytes));
            Assert.Equal(names.Count, blobs.Length);
            Assert.Equal(tensorBytes, cached);
        }
        Assert.Equal(all.Values.Sum(t => t.Length), server.DataBytesServed);
    }

    [Fact]
    public async Task CorruptedByteInTheServedFile_NodeRefusesToServe_NamingTheTensor()
    {
        using var fx = new Fixture(Fixture.Small);
        await using var server = await ServeAsync(fx);
        var config = ModelConfig.Load(fx.CheckpointDir);
        var all = WeightTestData.Tensors(fx.CheckpointDir);
        var victim = all[NeoXTensorNames.ForStage(config, 3, 6).First(n => n.Contains(".4.", StringComparison.Ordinal) && n.EndsWith("dense_h_to_4h.weight", StringComparison.Ordinal))];
        server.FileBytes(Repo, Revision, victim.File)[victim.Offset + victim.Length / 2] ^= 0x40;

        await using var swarm = await LocalSwarm.StartAsync(Options(server) with { WaitUntilCovered = false }, output.WriteLine);
        var node2 = swarm.NodeProcesses[1]!;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        await node2.WaitForExitAsync(timeout.Token);
        Assert.Equal(1, node2.ExitCode);
        string nodeLog = File.ReadAllText(Path.Combine(swarm.LogDir, "node-2.log"));
        output.WriteLine(nodeLog);
        Assert.Contains("refusing to serve layers [3,6)", nodeLog);
        Assert.Contains($"tensor '{victim.Name}'", nodeLog);
        Assert.Contains("SHA-256 mismatch", nodeLog);
        // The coordinator heard why, and layers 3:6 are not served by anyone: no request gets tokens from bad weights.
        Assert.False((bool)(await swarm.GetJsonAsync("/healthz"))!["covered"]!);
        string coordinatorLog = File.ReadAllText(Path.Combine(swarm.LogDir, "coordinator.log"));
        Assert.Contains("refusing to serve layers [3,6)", coordinatorLog);
        // Nothing of the bad tensor reached the node's blob store.
        // (The store may not even exist: the node can refuse before any other tensor of its range has arrived.)
        string store = Path.Combine(_tmp.Path, "node-2", "weights", "blobs", "sha256");
        var blobs = Directory.Exists(store) ? Directory.GetFiles(store) : [];
        Assert.DoesNotContain(blobs, b => new FileInfo(b).Length == victim.Length &&
            File.ReadAllBytes(b).AsSpan().SequenceEqual(server.FileBytes(Repo, Revision, victim.File).AsSpan((int)victim.Offset, (int)victim.Length)));
    }

    public void Dispose() => _tmp.Dispose();
}
