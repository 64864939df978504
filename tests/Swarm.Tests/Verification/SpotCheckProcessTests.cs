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

    private static LocalSwarmOptions ThreeReplicas(Fixture fx, double rate, string? fault) => Replicas(fx, rate, ["0:4", "0:4", "0:4"], fault);

    /// <summary>Nodes pinned to <paramref name="layers"/>; the last one gets <paramref name="fault"/>.</summary>
    private static LocalSwarmOptions Replicas(Fixture fx, double rate, string[] layers, string? fault) => new()
    {
        Model = fx.CheckpointDir, Nodes = layers.Length, Layers = layers, WireDtype = "f32", ThreadsPerNode = 1,
        CoordinatorArgs = ["--verify-rate", rate.ToString(System.Globalization.CultureInfo.InvariantCulture), "--ban-time", "10m"],
        PerNodeEnvironment = fault is null ? null
            : [.. Enumerable.Range(0, layers.Length).Select(i => i == layers.Length - 1 ? new Dictionary<string, string> { ["SWARM_FAULT"] = fault } : null)],
    };

    [Theory]
    [InlineData("corrupt:0.2", false)]
    [InlineData("token:0.2", false)]
    // Two-stage routes: the liar is a second stage, so its input copy is made by the first stage's node (ShadowCopy).
    [InlineData("corrupt:0.2", true)]
    public async Task FaultyReplica_IsBannedWithin30Jobs_AndEveryJobReturnsTheGoldenTokens(string fault, bool twoStages)
    {
        using var fx = new Fixture(Fixture.Tiny);
        var options = twoStages ? Replicas(fx, 0.3, ["0:2", "2:4", "2:4", "2:4"], fault) : ThreeReplicas(fx, 0.3, fault);
        await using var swarm = await LocalSwarm.StartAsync(options, output.WriteLine);
        string liarName = $"node-{options.Nodes}";
        int liar = await NodeIdAsync(swarm, liarName, options.Nodes);
        int jobs = 0;
        bool banned = false;
        while (jobs < 30 && !banned)
        {
            int p = jobs % fx.PromptCount;
            var tokens = await SwarmClient.CompleteAsync(swarm.HttpUrl, fx.Ids($"prompt.{p}"), NewTokens);
            // With one replica per route, every session through the liar is checked while it is on probation. With two
            // stages, a session whose both nodes are on probation checks only one of them (SpotCheckPlanner), so an early
            // job may carry the liar's noise: there only the ban and the jobs after it are asserted.
            if (!twoStages) Assert.Equal(fx.Ids($"greedy.{p}")[..NewTokens], tokens);
            jobs++;
            banned = (string?)(await NodeAsync(swarm, liar))["state"] == "banned";
        }
        output.WriteLine($"{fault}: banned after {jobs} jobs");
        foreach (var n in (await swarm.GetJsonAsync("/api/swarm"))!["nodes"]!.AsArray())
            output.WriteLine($"  node {n!["id"]} ({n["name"]}, layers {n["layers"]!.ToJsonString()}): {n["state"]}, checks {n["checks"]!.ToJsonString()}");
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
        string log = Path.Combine(swarm.LogDir, $"{liarName}.log");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!(File.Exists(log) && File.ReadAllText(log).Contains("identity is banned")) && DateTime.UtcNow < deadline) await Task.Delay(250);
        Assert.Contains("identity is banned", File.ReadAllText(log));
        using var http = new HttpClient();
        var metrics = await http.GetStringAsync(swarm.HttpUrl + "/metrics");
        foreach (var line in metrics.Split('\n').Where(l => l.Contains("verification", StringComparison.Ordinal))) output.WriteLine(line);
        Assert.Contains(metrics.Split('\n'), l => l.StartsWith("swarm_verification_checks_total{", StringComparison.Ordinal)
            && l.Contains("outcome=\"failed\"", StringComparison.Ordinal) && !l.EndsWith(" 0", StringComparison.Ordinal));
    }

    /// <summary>
    /// <c>--stream-verified-only</c> with a liar among three fresh replicas, three streams at a time. The base rate is
    /// low (0.01, so probation checks one session in ten): without the flag most streams through the liar would go
    /// unchecked and carry its noise. With it, every stream through a node on probation is checked and a token goes
    /// out only once no ban can take it back — so each stream is exactly the golden tokens, with no error event, and
    /// the liar is banned.
    /// </summary>
    [Fact]
    public async Task StreamVerifiedOnly_FaultyNewcomer_EveryStreamIsTheGoldenTokensWithoutAnErrorEvent()
    {
        using var fx = new Fixture(Fixture.Tiny);
        var basic = ThreeReplicas(fx, 0.01, "corrupt:1");
        var options = basic with { CoordinatorArgs = [.. basic.CoordinatorArgs, "--stream-verified-only"] };
        await using var swarm = await LocalSwarm.StartAsync(options, output.WriteLine);
        int liar = await NodeIdAsync(swarm, "node-3");
        const int total = 12, parallel = 3;
        int next = -1;
        async Task Worker()
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < total)
            {
                int p = i % fx.PromptCount;
                // StreamAsync fails on an error event and reads to [DONE].
                var (tokens, finish, _) = await SwarmClient.StreamAsync(swarm.HttpUrl, fx.Ids($"prompt.{p}"), NewTokens);
                Assert.Equal(fx.Ids($"greedy.{p}")[..NewTokens], tokens);
                Assert.Equal("length", finish);
            }
        }
        await Task.WhenAll(Enumerable.Range(0, parallel).Select(_ => Worker()));
        var node = await NodeAsync(swarm, liar);
        output.WriteLine($"liar {liar}: {node["state"]}, checks {node["checks"]!.ToJsonString()}");
        string coordinatorLog = File.ReadAllText(Path.Combine(swarm.LogDir, "coordinator.log"));
        output.WriteLine($"caught on a stream's route (not only as a shadow): {coordinatorLog.Contains($"route failed at node {liar}", StringComparison.Ordinal)}");
        Assert.Equal("banned", (string?)node["state"]);
    }

    [Fact]
    public async Task HonestMixedReplicas_200JobsCheckedAtRate1_NoNodeIsAccused()
    {
        using var fx = new Fixture(Fixture.Tiny);
        var options = ThreeReplicas(fx, 1.0, fault: null) with { PerNodeArgs = [[], ["--dtype", "bf16"], []] };
        await using var swarm = await LocalSwarm.StartAsync(options, output.WriteLine);
        await NodeIdAsync(swarm, "node-2"); // every replica serving before the jobs start
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

    /// <summary>The id of the node called <paramref name="name"/>, once it serves (the swarm is covered before every replica is).</summary>
    private static async Task<int> NodeIdAsync(LocalSwarm swarm, string name, int nodes = 3)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            var status = (await swarm.GetJsonAsync("/api/swarm"))!;
            var list = status["nodes"]!.AsArray();
            if (list.Count(n => (string?)n!["state"] == "serving") == nodes || DateTime.UtcNow > deadline)
                return (int)list.First(n => (string?)n!["name"] == name)!["id"]!;
            await Task.Delay(200);
        }
    }

    private static async Task<JsonNode> NodeAsync(LocalSwarm swarm, int id)
    {
        var status = (await swarm.GetJsonAsync("/api/swarm"))!;
        return status["nodes"]!.AsArray().First(n => (int)n!["id"]! == id)!;
    }
}
