using System.Net;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using Swarm.Cli.Bench.Capacity;
using Swarm.Cli.Commands;
using Swarm.Coordinator.Jobs;
using Swarm.Coordinator.Service;
using Swarm.Model;
using Swarm.Sampling;
using Swarm.Tests.Model;
using Xunit;

namespace Swarm.Tests.Scale;

/// <summary>
/// The pieces of <c>swarm bench coordinator</c>: its simulated nodes register with a real coordinator over the real protocol,
/// get ranges that cover the model and answer the steps of real jobs (through the coordinator's own job runner);
/// the /proc readings; the JSON's shape. Serial (the "processes" collection): a running coordinator feeds process-wide meters.
/// </summary>
[Collection("processes")]
public sealed class CoordinatorBenchTests
{
    private static string Checkpoint => Path.Combine(Fixture.Root, Fixture.Tiny, "checkpoint");

    [Fact]
    public async Task FakeSwarm_FourNodes_CoverTheModelAndAnswerJobsRoutedByTheCoordinator()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await using var coordinator = new SwarmCoordinator(new CoordinatorOptions { Model = Checkpoint, Listen = "127.0.0.1:0", VerifyRate = 0 }, NullLogger<SwarmCoordinator>.Instance);
        await coordinator.StartAsync(cts.Token);
        var cfg = coordinator.Config;
        long weights = LayerMemory.WeightBytesPerLayer(cfg, LayerMemory.PlacementBytesPerElement);
        long kv = LayerMemory.KvBytesPerTokenPerLayer(cfg, LayerMemory.PlacementBytesPerElement);
        long perLayer = weights + kv * LayerMemory.KvReserveTokens;
        int layersPerNode = Math.Max(1, cfg.NumLayers / 2);
        var profile = new FakeNodeProfile(coordinator.ModelId, weights, kv, perLayer * layersPerNode + perLayer / 2, 1000, TimeSpan.Zero, cfg.VocabSize);

        await using var nodes = await FakeSwarm.StartAsync(4, profile, coordinator.ControlEndPoint!, cts.Token);
        // The Welcome goes out just before the coordinator records the node: wait for all four to serve.
        while (coordinator.Registry.Snapshot().Count(n => n.IsRoutable) < 4) await Task.Delay(20, cts.Token);

        Assert.True(coordinator.Registry.ServingCoverage(cfg.NumLayers).IsCovered);
        Assert.All(coordinator.Registry.Snapshot(), n => Assert.Equal(layersPerNode, n.Range!.Value.Count));
        Assert.Equal(4, nodes.Nodes.Select(n => n.NodeId).Distinct().Count());
        using var jobs = new JobRunner(coordinator, NullLogger<JobRunner>.Instance);
        var result = await jobs.RunAsync(new JobSpec([1, 2, 3], new SamplingOptions { MaxNewTokens = 5 }, []), null, cts.Token);
        // The last hop's token is a fixed function of job and step: the coordinator delivered each step's own reply.
        int[] expected = [.. Enumerable.Range(0, 5).Select(step => (int)((1L * 7919 + step * 104729 + 13) % cfg.VocabSize))];
        Assert.Equal(expected, result.TokenIds);
        Assert.Equal(5, nodes.Nodes.Sum(n => n.Steps));
    }

    [Fact]
    public void Address_DistinctLoopbackPerNode()
    {
        var addresses = Enumerable.Range(0, 1000).Select(FakeSwarm.Address).ToList();
        Assert.Equal(1000, addresses.Distinct().Count());
        Assert.All(addresses, a => Assert.True(IPAddress.IsLoopback(a)));
    }

    [Fact]
    public void ProcessUsage_OwnProcess_CpuGrowsWithWorkAndMemoryIsResident()
    {
        int pid = Environment.ProcessId;
        double before = ProcessUsage.CpuMs(pid);
        var until = DateTime.UtcNow.AddMilliseconds(300);
        double x = 0;
        while (DateTime.UtcNow < until) x += Math.Sqrt(x + 1);
        GC.KeepAlive(x);
        Assert.True(ProcessUsage.CpuMs(pid) > before);
        Assert.True(ProcessUsage.ResidentMb(pid) > 10);
        Assert.True(ProcessUsage.LoadAverage() >= 0);
    }

    [Fact]
    public void Json_HasTheIssuesShape_OneRowPerNodeCountAndOneColumnPerJobCount()
    {
        var settings = new CoordinatorBench.Settings([10, 100], [16, 256], 5, "pythia-12b", 4, 64, TimeSpan.Zero);
        CoordinatorBench.LoadFigures Load(int m) => new(m, 1000 + m, 12.5, 5000, 0, 80, 30, 40);
        var figures = new[] { 10, 100 }.Select(n => new CoordinatorBench.SwarmFigures(n, 1.5, 0.4, 0.5, 0.3, 70,
            new PlacementTiming.Figures(0.1, 0.2, 0.3), [Load(16), Load(256)], n - 1)).ToList();

        var json = JsonNode.Parse(BenchCoordinatorCommand.Json(settings, figures, 1, 2))!;

        Assert.Equal("[10,100]", json["nodes"]!.ToJsonString());
        Assert.Equal("[16,256]", json["jobs"]!.ToJsonString());
        Assert.Equal("[[1016,1256],[1016,1256]]", json["tokens_per_s"]!.ToJsonString());
        Assert.Equal("[[12.5,12.5],[12.5,12.5]]", json["coordinator_cpu_per_1k_tokens_ms"]!.ToJsonString());
        Assert.Equal("[1.5,1.5]", json["heartbeat_cpu_percent"]!.ToJsonString());
        Assert.Equal("[9,99]", json["serving_after_idle"]!.ToJsonString());
    }
}
