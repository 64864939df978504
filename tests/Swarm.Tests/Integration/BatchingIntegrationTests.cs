using Swarm.Cli;
using Swarm.Tests.Batching;
using Swarm.Tests.Model;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Integration;

/// <summary>Continuous batching across real processes: many concurrent jobs through a 3-node swarm.</summary>
[Collection("processes")]
public class BatchingIntegrationTests(ITestOutputHelper output)
{
    [Fact]
    public async Task ThreeNodes_SixteenConcurrentStaggeredJobs_EachMatchesGoldenGreedy_AndKvIsFreed()
    {
        using var fx = new Fixture(Fixture.Small);
        var jobs = BatchingTests.MixedJobs(fx);
        await using var swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
        {
            Model = fx.CheckpointDir, Nodes = 3, Layers = ["0:2", "2:4", "4:6"], WireDtype = "f32", ThreadsPerNode = 1,
        }, output.WriteLine);
        var tasks = jobs.Select(async (j, i) =>
        {
            await Task.Delay(j.Job.ArrivesAt * 25); // started at different times
            return SwarmIntegrationTests.Tokens(await SwarmIntegrationTests.CompleteAsync(swarm.HttpUrl, j.Job.Prompt, j.Job.MaxNew));
        }).ToArray();
        var got = await Task.WhenAll(tasks);
        for (int i = 0; i < jobs.Count; i++) Assert.Equal(jobs[i].Expected, got[i]);

        // Every session was closed: the nodes' KV pools are empty again (reported by the next heartbeats).
        long used = -1, total = 0;
        for (int attempt = 0; attempt < 50 && used != 0; attempt++)
        {
            await Task.Delay(100);
            var nodes = (await swarm.GetJsonAsync("/api/swarm"))!["nodes"]!.AsArray();
            used = nodes.Sum(n => (long)n!["kv_tokens_used"]! + (long)n["sessions"]! + (long)n["kv_blocks_used"]!);
            total = nodes.Min(n => (long)n!["kv_blocks_total"]!);
        }
        Assert.Equal(0, used);
        Assert.True(total > 0, "every node reports its KV block pool in /api/swarm");
    }

    [Fact]
    public async Task ThreeNodes_SmallKvPools_Burst200Jobs_AllCompleteCorrectly_AndPoolsEmptyAfterwards()
    {
        using var fx = new Fixture(Fixture.Small);
        var jobs = BatchingTests.MixedJobs(fx, count: 200, stagger: 0);
        // --memory far below the weights: each node's pool is the minimum, one full context (512 positions =
        // 32 blocks), while 16 jobs at a time need up to 6 blocks each — sessions queue on the nodes for blocks.
        await using var swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
        {
            Model = fx.CheckpointDir, Nodes = 3, Layers = ["0:2", "2:4", "4:6"], WireDtype = "f32", ThreadsPerNode = 1, Memory = "1MB",
        }, output.WriteLine);
        int peakUsed = 0, peakWaiting = 0;
        using var stop = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                var nodes = (await swarm.GetJsonAsync("/api/swarm"))!["nodes"]!.AsArray();
                peakUsed = Math.Max(peakUsed, nodes.Max(n => (int)n!["kv_blocks_used"]!));
                peakWaiting = Math.Max(peakWaiting, nodes.Max(n => (int)n!["waiting_sessions"]!));
                await Task.Delay(200);
            }
        });
        var got = await Task.WhenAll(jobs.Select(async j =>
            SwarmIntegrationTests.Tokens(await SwarmIntegrationTests.CompleteAsync(swarm.HttpUrl, j.Job.Prompt, j.Job.MaxNew))));
        stop.Cancel();
        await sampler;
        output.WriteLine($"peak KV blocks used on a node: {peakUsed}/32, peak sessions waiting for blocks: {peakWaiting}");
        Assert.InRange(peakUsed, 1, 32);
        for (int i = 0; i < jobs.Count; i++) Assert.Equal(jobs[i].Expected, got[i]);

        var status = (await swarm.GetJsonAsync("/api/swarm"))!;
        Assert.Equal(200, (int)status["jobs"]!["completed"]!);
        Assert.Equal(0, (int)status["jobs"]!["failed"]!);
        long used = -1;
        for (int attempt = 0; attempt < 50 && used != 0; attempt++)
        {
            await Task.Delay(100);
            var nodes = (await swarm.GetJsonAsync("/api/swarm"))!["nodes"]!.AsArray();
            Assert.All(nodes, n => Assert.Equal(32, (int)n!["kv_blocks_total"]!));
            used = nodes.Sum(n => (long)n!["kv_blocks_used"]! + (long)n["sessions"]! + (long)n["waiting_sessions"]!);
        }
        Assert.Equal(0, used);
        output.WriteLine($"recoveries (preemptions replayed): {(int)status["recoveries"]!}");
    }
}
