using System.Text.Json.Nodes;
using Swarm.Checkpoints;
using Swarm.Model;
using Swarm.Node;
using Swarm.Sampling;
using Swarm.Tests.Model;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Swarm.Tests.Integration;

/// <summary>
/// <c>swarm run</c> as a person runs it — a real CLI process, which generates through the stage host a node runs
/// (<see cref="LocalPipeline"/>): the fixtures' golden tokens with <c>--json</c>, streamed, with <c>--tp 2</c>, a stop
/// token, seeded sampling, text prompts, and a bad token id.
/// </summary>
[Collection("processes")]
public class RunCommandProcessTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(2);

    private async Task<(int Exit, string Stdout, string Stderr)> RunAsync(params string[] args)
    {
        var result = await CliProcess.RunAsync(SwarmProgram.Cli, Timeout, ["run", .. args]);
        output.WriteLine($"exit {result.Exit}\n{result.Stdout}\n{result.Stderr}");
        return result;
    }

    private static string Ids(IEnumerable<long> ids) => string.Join(",", ids);

    private static long[] TokenIds(JsonNode json) => [.. json["token_ids"]!.AsArray().Select(t => (long)t!)];

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public async Task Run_Json_PrintsTheGoldenGreedyTokens(int prompt)
    {
        using var fx = new Fixture(Fixture.Tiny);
        var expected = fx.Ids($"greedy.{prompt}");
        var (exit, stdout, _) = await RunAsync("--model", fx.CheckpointDir, "--prompt-ids", Ids(fx.Ids($"prompt.{prompt}")),
            "--max-new-tokens", expected.Length.ToString(), "--temperature", "0", "--json");
        Assert.Equal(0, exit);
        var json = JsonNode.Parse(stdout)!;
        Assert.Equal(expected, TokenIds(json));
        Assert.Equal(fx.Ids($"prompt.{prompt}").Length, (int)json["prompt_tokens"]!);
        Assert.Equal("length", (string)json["finish_reason"]!);
        Assert.Equal("", (string)json["text"]!); // the fixture has no tokenizer
        Assert.True((double)json["timings"]!["prefill_ms"]! > 0);
    }

    [Fact]
    public async Task Run_WithoutJson_StreamsTheGoldenTokensAndSummarisesOnStderr()
    {
        using var fx = new Fixture(Fixture.Tiny);
        var expected = fx.Ids("greedy.2");
        var (exit, stdout, stderr) = await RunAsync("--model", fx.CheckpointDir, "--prompt-ids", Ids(fx.Ids("prompt.2")),
            "--max-new-tokens", expected.Length.ToString());
        Assert.Equal(0, exit);
        // Without a tokenizer every token is printed as its id, followed by a space, as it is sampled.
        Assert.Equal(string.Join(" ", expected) + " \n", stdout);
        Assert.Contains($"[{expected.Length} tokens, finish=length, prefill ", stderr);
    }

    [Fact]
    public async Task Run_Tp2WithAStopId_StopsAtTheFirstGoldenOccurrence()
    {
        using var fx = new Fixture(Fixture.Tiny);
        var golden = fx.Ids("greedy.1");
        long stopId = golden[6];
        int stopAt = Array.IndexOf(golden, stopId);
        var (exit, stdout, _) = await RunAsync("--model", fx.CheckpointDir, "--prompt-ids", Ids(fx.Ids("prompt.1")),
            "--max-new-tokens", golden.Length.ToString(), "--tp", "2", "--devices", "cpu", "--stop-ids", $"{stopId}", "--json");
        Assert.Equal(0, exit);
        var json = JsonNode.Parse(stdout)!;
        Assert.Equal(golden[..(stopAt + 1)], TokenIds(json));
        Assert.Equal("stop", (string)json["finish_reason"]!);
    }

    [Fact]
    public async Task Run_Sampled_DrawsEveryStepFromItsSeedAndStepNumber()
    {
        using var fx = new Fixture(Fixture.Tiny);
        var prompt = fx.Ids("prompt.1");
        var options = new SamplingOptions { Temperature = 0.9, TopK = 50, TopP = 0.95, Seed = 1234, MaxNewTokens = 20 };
        var (exit, stdout, _) = await RunAsync("--model", fx.CheckpointDir, "--prompt-ids", Ids(prompt), "--max-new-tokens", "20",
            "--temperature", "0.9", "--top-k", "50", "--top-p", "0.95", "--seed", "1234", "--json");
        Assert.Equal(0, exit);
        var got = TokenIds(JsonNode.Parse(stdout)!);
        Assert.Equal(20, got.Length);

        // The contract of a swarm job: draw k is Sampler(seed, step k) on the logits after prompt + tokens[..k].
        // Checked against one full forward of the whole sequence, without a KV cache.
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        using var model = StageModel.Load(ckpt, 0, ckpt.Config.NumLayers);
        using var session = new StageSession(model);
        using var scope = NewDisposeScope();
        var logits = session.Forward(tensor([.. prompt, .. got[..^1]]), allPositions: true);
        for (int k = 0; k < got.Length; k++)
            Assert.Equal(got[k], new Sampler(options, step: k).Next(logits[prompt.Length - 1 + k]));
        Assert.NotEqual(fx.Ids("greedy.1")[..20], got); // sampling, not argmax
    }

    [Fact]
    public async Task Run_TextPrompt_StreamsTheTextItsJsonReports()
    {
        string[] args = ["--model", CodeSwarmFixture.ModelDir, "--prompt", "def fibonacci(n):", "--max-new-tokens", "24", "--threads", "1"];
        var (exit, streamed, _) = await RunAsync(args);
        Assert.Equal(0, exit);
        var (jsonExit, stdout, _) = await RunAsync([.. args, "--json"]);
        Assert.Equal(0, jsonExit);
        var json = JsonNode.Parse(stdout)!;
        Assert.Equal(24, TokenIds(json).Length);
        Assert.Matches("[a-z]", (string)json["text"]!);
        Assert.Equal((string)json["text"]! + "\n", streamed);
    }

    [Fact]
    public async Task Run_TokenIdOutsideTheVocabulary_FailsWithOneLine()
    {
        using var fx = new Fixture(Fixture.Tiny);
        var (exit, stdout, stderr) = await RunAsync("--model", fx.CheckpointDir, "--prompt-ids", "1,512,3", "--json");
        Assert.Equal(1, exit);
        Assert.Equal("", stdout);
        Assert.Equal("swarm: token id 512 is outside the vocabulary [0, 512)\n", stderr);
    }
}
