using System.Text.Json.Nodes;
using Swarm.Cli;
using Swarm.Tests.Integration;
using Swarm.Tests.Model;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Verification;

/// <summary>
/// Spot checks on draft-model speculation, against real processes: three replicas of every layer of the tiny fixture,
/// each holding the fixture itself as its draft model (so nearly every step after the prefill verifies four drafted
/// tokens), one of them lying through the <c>SWARM_FAULT</c> test hook (its token, the first of a speculative step's
/// accepted ones, is wrong on one step in five). The checker compares the speculative steps like any other — the shadow
/// gets the same draft and its own copy of the drafting order — so the liar is banned, every job returns the fixture's
/// golden greedy tokens, and afterwards every pass of the honest replicas, speculative ones included, is checked.
/// </summary>
[Collection("processes")]
public class DraftModelSpotCheckTests(ITestOutputHelper output)
{
    private const int NewTokens = 16;

    [Fact]
    public async Task DraftModelSpeculation_LyingLastStage_IsBanned_AndSpeculativeStepsAreChecked()
    {
        using var fx = new Fixture(Fixture.Tiny);
        var options = new LocalSwarmOptions
        {
            Model = fx.CheckpointDir, Nodes = 3, Layers = ["0:4", "0:4", "0:4"], WireDtype = "f32", ThreadsPerNode = 1,
            CoordinatorArgs = ["--verify-rate", "1", "--ban-time", "10m", "--draft-model", fx.CheckpointDir],
            NodeArgs = ["--draft-model", fx.CheckpointDir],
            PerNodeEnvironment = [null, null, new Dictionary<string, string> { ["SWARM_FAULT"] = "token:0.2" }],
        };
        await using var swarm = await LocalSwarm.StartAsync(options, output.WriteLine);
        int liar = await NodeIdAsync(swarm, "node-3");
        int jobs = 0, drafted = 0;
        bool banned = false;
        while (jobs < 30 && !banned)
        {
            int p = jobs % fx.PromptCount;
            var (passes, accepted, drafts, tokens) = await CompleteAsync(swarm, fx.Ids($"prompt.{p}"));
            Assert.Equal(fx.Ids($"greedy.{p}")[..NewTokens], tokens);
            drafted += drafts;
            jobs++;
            banned = (string?)(await NodeAsync(swarm, liar))["state"] == "banned";
        }
        string coordinatorLog = File.ReadAllText(Path.Combine(swarm.LogDir, "coordinator.log"));
        foreach (var line in coordinatorLog.Split('\n').Where(l => l.Contains("banned node", StringComparison.Ordinal))) output.WriteLine(line);
        output.WriteLine($"banned after {jobs} jobs; {drafted} drafted tokens sent meanwhile");
        Assert.True(banned, "the lying last stage was not banned within 30 jobs");
        Assert.True(drafted > 0, "no step carried a drafted token: speculation did not run");

        // The honest replicas go on, exactly; at rate 1 every pass — the speculative ones too — is checked by both.
        int before = await PassedChecksAsync(swarm, liar), totalPasses = 0, speculative = 0;
        for (int p = 0; p < fx.PromptCount; p++)
        {
            var (passes, accepted, drafts, tokens) = await CompleteAsync(swarm, fx.Ids($"prompt.{p}"));
            Assert.Equal(fx.Ids($"greedy.{p}")[..NewTokens], tokens);
            totalPasses += passes;
            speculative += drafts > 0 ? passes - 1 : 0;
        }
        int checkedNow = await PassedChecksAsync(swarm, liar) - before;
        output.WriteLine($"{totalPasses} passes ({speculative} speculative), {checkedNow} passed checks");
        Assert.True(speculative > 0, "no speculative pass after the ban");
        Assert.True(checkedNow >= 2 * totalPasses, $"{checkedNow} passed checks for {totalPasses} passes at rate 1: speculative passes went unchecked");
    }

    private static async Task<(int Passes, int Accepted, int Drafted, long[] Tokens)> CompleteAsync(LocalSwarm swarm, long[] prompt)
    {
        var (status, json) = await SwarmClient.PostAsync(swarm.HttpUrl, SwarmClient.Body(prompt, NewTokens).ToJsonString());
        Assert.Equal(200, status);
        var tokens = json!["choices"]![0]!["token_ids"]!.AsArray().Select(t => (long)t!).ToArray();
        var sp = json["swarm"]!["speculative"]!;
        return ((int)sp["passes"]!, (int)sp["accepted"]!, (int)sp["drafted"]!, tokens);
    }

    /// <summary>Checks passed, summed over the nodes other than <paramref name="except"/>.</summary>
    private static async Task<int> PassedChecksAsync(LocalSwarm swarm, int except)
    {
        var status = (await swarm.GetJsonAsync("/api/swarm"))!;
        return status["nodes"]!.AsArray().Where(n => (int)n!["id"]! != except).Sum(n => (int)n!["checks"]!["passed"]!);
    }

    private static async Task<int> NodeIdAsync(LocalSwarm swarm, string name)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            var list = (await swarm.GetJsonAsync("/api/swarm"))!["nodes"]!.AsArray();
            if (list.Count(n => (string?)n!["state"] == "serving") == 3 || DateTime.UtcNow > deadline)
                return (int)list.First(n => (string?)n!["name"] == name)!["id"]!;
            await Task.Delay(200);
        }
    }

    private static async Task<JsonNode> NodeAsync(LocalSwarm swarm, int id) =>
        (await swarm.GetJsonAsync("/api/swarm"))!["nodes"]!.AsArray().First(n => (int)n!["id"]! == id)!;
}
