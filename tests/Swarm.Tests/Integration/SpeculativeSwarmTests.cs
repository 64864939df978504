using Swarm.Cli;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Integration;

/// <summary>
/// <c>--speculative ngram</c> on a real swarm (coordinator and node processes) serving codelm-tiny: greedy completions
/// equal plain single-process decoding token for token, streamed and not, with fewer passes than tokens; and a node killed
/// mid-job changes nothing (the replay recomputes from the coordinator's accepted token ids, with the same drafts).
/// </summary>
[Collection("processes")]
public class SpeculativeSwarmTests(ITestOutputHelper output)
{
    /// <summary>Repetitive code: prompt lookup has something to find.</summary>
    private const string Prompt = "def add(self, item):\n        self.items.append(item)\n\n    def remove(self, item):\n        self.items.remove(item)\n\n    def ";

    private static LocalSwarmOptions TwoStages(params string[] nodeArgs) => new()
    {
        Model = BuiltInModels.CodeLmTiny, Nodes = 2, Layers = ["0:2", "2:4"], WireDtype = "f32", ThreadsPerNode = 1,
        CoordinatorArgs = ["--speculative", "ngram", "--speculative-max", "4", "--dead-after", "1500ms", "--step-timeout", "30s"],
        NodeArgs = nodeArgs,
    };

    private static (long[] Prompt, int[] Plain) PlainGreedy(int maxNew) => CodeLmScenarios.PlainGreedy(Prompt, maxNew);

    [Fact]
    public async Task Ngram_GreedyCompletion_EqualsPlainDecoding_WithFewerPassesThanTokens()
    {
        var (prompt, plain) = PlainGreedy(64);
        await using var swarm = await LocalSwarm.StartAsync(TwoStages(), output.WriteLine);

        var body = SwarmClient.Body(prompt, 64).ToJsonString();
        var (status, json) = await SwarmClient.PostAsync(swarm.HttpUrl, body);
        var streamed = await SwarmClient.StreamAsync(swarm.HttpUrl, prompt, 64);

        Assert.Equal(200, status);
        var ids = json!["choices"]![0]!["token_ids"]!.AsArray().Select(t => (int)t!).ToArray();
        Assert.Equal(plain, ids);
        Assert.Equal(plain, streamed.Tokens.Select(t => (int)t));
        var sp = json["swarm"]!["speculative"]!;
        int passes = (int)sp["passes"]!, accepted = (int)sp["accepted"]!, drafted = (int)sp["drafted"]!;
        output.WriteLine($"speculative: {passes} passes, {accepted}/{drafted} drafted tokens accepted for {ids.Length} tokens");
        Assert.Equal(ids.Length, passes + accepted);
        Assert.InRange(accepted, 1, drafted);
        Assert.True(passes < ids.Length);
    }

    [Fact]
    public Task Ngram_LastStageNodeKilledMidJob_OutputIdenticalToPlainDecoding() =>
        // ≥ 30 ms per pass: the job is still running when the node dies.
        CodeLmScenarios.LastStageKilledMidJob_OutputIdenticalToPlainAsync(TwoStages("--simulate-latency-ms", "15"), Prompt, output.WriteLine);
}
