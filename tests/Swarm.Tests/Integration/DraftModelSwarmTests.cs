using Swarm.Cli;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Integration;

/// <summary>
/// <c>--draft-model</c> on a real swarm (coordinator and node processes) serving codelm-tiny with its trained 1-layer
/// draft: the last-stage node drafts the next tokens with every answer, the next pass verifies them. Greedy completions
/// equal plain single-process decoding token for token, streamed and not, in fewer passes than tokens; a node without the
/// draft model as the last stage makes the job fall back to prompt lookup; and the last-stage node killed mid-job changes
/// nothing (its replacement rebuilds the draft cache from the token ids and verifies the same drafts).
/// </summary>
[Collection("processes")]
public class DraftModelSwarmTests(ITestOutputHelper output)
{
    private const string Prompt = "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n";

    private static LocalSwarmOptions TwoStages(params string[] nodeArgs) => new()
    {
        Model = BuiltInModels.CodeLmTiny, Nodes = 2, Layers = ["0:2", "2:4"], WireDtype = "f32", ThreadsPerNode = 1,
        CoordinatorArgs = ["--draft-model", BuiltInModels.CodeLmTinyDraft, "--speculative-max", "4", "--dead-after", "1500ms", "--step-timeout", "30s"],
        NodeArgs = ["--draft-model", BuiltInModels.CodeLmTinyDraft, .. nodeArgs],
    };

    private static (long[] Prompt, int[] Plain) PlainGreedy(int maxNew) => CodeLmScenarios.PlainGreedy(Prompt, maxNew);

    [Fact]
    public async Task DraftModel_GreedyCompletion_EqualsPlainDecoding_WithFewerPassesThanTokens()
    {
        var (prompt, plain) = PlainGreedy(64);
        await using var swarm = await LocalSwarm.StartAsync(TwoStages(), output.WriteLine);

        var (status, json) = await SwarmClient.PostAsync(swarm.HttpUrl, SwarmClient.Body(prompt, 64).ToJsonString());
        var streamed = await SwarmClient.StreamAsync(swarm.HttpUrl, prompt, 64);

        Assert.Equal(200, status);
        var ids = json!["choices"]![0]!["token_ids"]!.AsArray().Select(t => (int)t!).ToArray();
        Assert.Equal(plain, ids);
        Assert.Equal(plain, streamed.Tokens.Select(t => (int)t));
        var sp = json["swarm"]!["speculative"]!;
        int passes = (int)sp["passes"]!, accepted = (int)sp["accepted"]!, drafted = (int)sp["drafted"]!;
        output.WriteLine($"draft model: {passes} passes, {accepted}/{drafted} drafted tokens accepted for {ids.Length} tokens");
        Assert.Equal(ids.Length, passes + accepted);
        Assert.InRange(accepted, 1, drafted - 1);   // a trained 1-layer draft: often right, not always
        Assert.True(passes < ids.Length);
        string lastNodeLog = File.ReadAllText(Path.Combine(swarm.LogDir, "node-2.log"));
        Assert.Contains("draft model", lastNodeLog);
    }

    [Fact]
    public async Task DraftModel_LastStageWithoutTheDraft_FallsBackToPromptLookup_SameOutput()
    {
        var (prompt, plain) = PlainGreedy(48);
        // Only the first stage's node holds the draft: the last stage cannot draft.
        var options = TwoStages() with { NodeArgs = [], PerNodeArgs = [["--draft-model", BuiltInModels.CodeLmTinyDraft], []] };
        await using var swarm = await LocalSwarm.StartAsync(options, output.WriteLine);

        var (status, json) = await SwarmClient.PostAsync(swarm.HttpUrl, SwarmClient.Body(prompt, 48).ToJsonString());

        Assert.Equal(200, status);
        Assert.Equal(plain, json!["choices"]![0]!["token_ids"]!.AsArray().Select(t => (int)t!));
        var sp = json["swarm"]!["speculative"]!;
        output.WriteLine($"fallback: {sp.ToJsonString()}");
        Assert.Equal(48, (int)sp["passes"]! + (int)sp["accepted"]!);
        Assert.DoesNotContain("draft model", File.ReadAllText(Path.Combine(swarm.LogDir, "node-2.log")));
    }

    [Fact]
    public Task DraftModel_LastStageNodeKilledMidJob_OutputIdenticalToPlainDecoding() =>
        // ≥ 30 ms per pass: the job is still running when the node dies.
        CodeLmScenarios.LastStageKilledMidJob_OutputIdenticalToPlainAsync(TwoStages("--simulate-latency-ms", "15"), Prompt, output.WriteLine);
}
