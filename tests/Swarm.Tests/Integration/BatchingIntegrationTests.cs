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
}
