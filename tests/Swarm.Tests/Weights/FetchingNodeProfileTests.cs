using Swarm.Protocol;
using Swarm.Tests.Integration;
using Swarm.Tests.Model;
using Swarm.Tests.Node;
using Swarm.Tests.Presets;
using Swarm.Weights;
using Xunit;

namespace Swarm.Tests.Weights;

/// <summary>
/// A node process started without <c>--model</c> learns the model's shape from the source the coordinator names: it
/// checks its memory budget against it and benchmarks it, instead of announcing nothing.
/// </summary>
[Collection("processes")]
public sealed class FetchingNodeProfileTests : IDisposable
{
    private const string Repo = "EleutherAI/pythia-test";
    private const string Revision = "step143000";
    private readonly TempDir _tmp = new();

    private async Task<(HubTestServer Server, FakeCoordinator Coordinator)> StartAsync(Fixture fx)
    {
        var server = await HubTestServer.StartAsync();
        server.AddFolder(Repo, Revision, fx.CheckpointDir);
        return (server, FakeCoordinator.Start(modelSource: ModelSource.Parse(server.RepoUrl(Repo), Revision).Key));
    }

    private CliProcess StartNode(FakeCoordinator coordinator, params string[] extra) =>
        CliProcess.Start(SwarmProgram.Cli, new Dictionary<string, string> { ["SWARM_CACHE"] = _tmp.Sub("node") },
            ["node", "--coordinator", $"127.0.0.1:{coordinator.EndPoint.Port}", "--threads", "1", .. extra]);

    [Fact]
    public async Task NodeWithoutModel_BenchmarksTheSourcesModel_AndReportsItInHeartbeats()
    {
        using var fx = new Fixture(Fixture.Small);
        var (server, coordinator) = await StartAsync(fx);
        await using var _ = server;
        await using var __ = coordinator;
        await using var node = StartNode(coordinator);

        var hello = await coordinator.NextAsync<Hello>(TimeSpan.FromSeconds(60));
        Assert.Equal((0.0, ""), (hello.LayerTokensPerSecond, hello.ModelId)); // the shape is unknown before registration
        Heartbeat beat;
        do beat = await coordinator.NextAsync<Heartbeat>(TimeSpan.FromSeconds(30));
        while (beat.LayerTokensPerSecond == 0);
        Assert.True(double.IsFinite(beat.LayerTokensPerSecond) && beat.LayerTokensPerSecond > 1, $"benchmark {beat.LayerTokensPerSecond}");
        Assert.Contains("the swarm's model has 6 layers of width", node.Output);
    }

    [Fact]
    public async Task NodeWithoutModel_WhoseMemoryCannotHoldALayerOfTheSourcesModel_LeavesSayingWhy()
    {
        using var fx = new Fixture(Fixture.Small);
        var (server, coordinator) = await StartAsync(fx);
        await using var _ = server;
        await using var __ = coordinator;
        await using var node = StartNode(coordinator, "--memory", "64KB");

        var leave = await coordinator.NextAsync<Leave>(TimeSpan.FromSeconds(60));
        Assert.Contains("--memory 64KB cannot hold one layer of this model", leave.Reason);
        using var exit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (!node.HasExited) await Task.Delay(100, exit.Token);
        Assert.Contains("--memory 64KB cannot hold one layer", node.Output);
    }

    public void Dispose() => _tmp.Dispose();
}
