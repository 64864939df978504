using System.Text.Json.Nodes;
using Swarm.Cli;
using Swarm.Tests.Integration;
using Swarm.Tests.Model;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Verification;

/// <summary>
/// Spot checks against real processes: three replicas of every layer of the tiny fixture, one of them lying through the
/// <c>SWARM_FAULT</c> test hook. The liar is banned (and refused when it registers again) within 30 jobs, and every job
/// still returns the fixture's golden greedy tokens; honest replicas of different weight types (f32, bf16) are never
/// accused over 200 jobs checked at rate 1.
/// </summary>
[Collection("processes")]
public class SpotCheckProcessTests(ITestOutputHelper output)
{
    private const int NewTokens = 6;

    private static LocalSwarmOptions ThreeReplicas(Fixture fx, double rate, string? fault) => new()
    {
        Model = fx.CheckpointDir, Nodes = 3, Layers = ["0:4", "0:4", "0:4"], WireDtype = "f32", ThreadsPerNode = 1,
        CoordinatorArgs = ["--verify-rate", rate.ToString(System.Globalization.CultureInfo.InvariantCulture), "--ban-time", "10m"],
        PerNodeEnvironment = fault is null ? null : [null, null, new Dictionary<string, string> { ["SWARM_FAULT"] = fault }],
    };

    [Theory]
    [InlineData("corrupt:0.2")]
    [InlineData("token:0.2")]
    public async Task FaultyReplica_IsBannedWithin30Jobs_AndEveryJobReturnsTheGoldenTokens(string fault)
    {
        using var fx = new Fixture(Fixture.Tiny);
        await using var swarm = await LocalSwarm.StartAsync(ThreeReplicas(fx, 0.3, fault), output.WriteLine);
        int liar = await NodeIdAsync(swarm, "node-3");
        int jobs = 0;
        bool banned = false;
        while (jobs < 30 && !banned)
        {
            int p = jobs % fx.PromptCount;
            var tokens = await SwarmClient.CompleteAsync(swarm.HttpUrl, fx.Ids($"prompt.{p}"), NewTokens);
            Assert.Equal(fx.Ids($"greedy.{p}")[..NewTokens], tokens);
            jobs++;
            banned = (string?)(await NodeAsync(swarm, liar))["state"] == "banned";
        }
        output.WriteLine($"{fault}: banned after {jobs} jobs");
        Assert.True(banned, $"the node with {fault} was not banned within 30 jobs");
        var node = await NodeAsync(swarm, liar);
        Assert.True((int)node["checks"]!["failed"]! >= 1);
        // The swarm goes on without it, still exactly.
        for (int p = 0; p < fx.PromptCount; p++)
            Assert.Equal(fx.Ids($"greedy.{p}")[..NewTokens], await SwarmClient.CompleteAsync(swarm.HttpUrl, fx.Ids($"prompt.{p}"), NewTokens));
        var status = (await swarm.GetJsonAsync("/api/swarm"))!;
        foreach (var n in status["nodes"]!.AsArray())
            if ((int)n!["id"]! != liar) Assert.Equal(0, (int)n["checks"]!["failed"]!);
        // Disconnected, it registers again with the same identity key and is refused.
        string log = Path.Combine(swarm.LogDir, "node-3.log");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!(File.Exists(log) && File.ReadAllText(log).Contains("identity is banned")) && DateTime.UtcNow < deadline) await Task.Delay(250);
        Assert.Contains("identity is banned", File.ReadAllText(log));
        using var http = new HttpClient();
        var metrics = await http.GetStringAsync(swarm.HttpUrl + "/metrics");
        Assert.Contains("swarm_verification_checks_total{outcome=\"failed\"}", metrics);
    }

    [Fact]
    public async Task HonestMixedReplicas_200JobsCheckedAtRate1_NoNodeIsAccused()
    {
        using var fx = new Fixture(Fixture.Tiny);
        var options = ThreeReplicas(fx, 1.0, fault: null) with { PerNodeArgs = [[], ["--dtype", "bf16"], []] };
        await using var swarm = await LocalSwarm.StartAsync(options, output.WriteLine);
        const int total = 200, parallel = 4;
        int next = -1;
        async Task Worker()
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < total)
            {
                var tokens = await SwarmClient.CompleteAsync(swarm.HttpUrl, fx.Ids($"prompt.{i % fx.PromptCount}"), 4);
                Assert.Equal(4, tokens.Length);
            }
        }
        await Task.WhenAll(Enumerable.Range(0, parallel).Select(_ => Worker()));
        var status = (await swarm.GetJsonAsync("/api/swarm"))!;
        int passed = 0;
        foreach (var n in status["nodes"]!.AsArray())
        {
            output.WriteLine($"node {n!["id"]} ({n["name"]}): {n["state"]}, checks {n["checks"]!.ToJsonString()}");
            Assert.Equal("serving", (string?)n["state"]);
            Assert.Equal(0, (int)n["checks"]!["failed"]!);
            passed += (int)n["checks"]!["passed"]!;
        }
        // Every step of every job was checked (two replicas pass per step): far more than 200 passes.
        Assert.True(passed >= 2 * total, $"only {passed} passed checks over {total} jobs at rate 1");
    }

    private static async Task<int> NodeIdAsync(LocalSwarm swarm, string name)
    {
        var status = (await swarm.GetJsonAsync("/api/swarm"))!;
        return (int)status["nodes"]!.AsArray().First(n => (string?)n!["name"] == name)!["id"]!;
    }

    private static async Task<JsonNode> NodeAsync(LocalSwarm swarm, int id)
    {
        var status = (await swarm.GetJsonAsync("/api/swarm"))!;
        return status["nodes"]!.AsArray().First(n => (int)n!["id"]! == id)!;
    }
}
