using System.Text;
using System.Text.Json.Nodes;
using Swarm.Cli;
using Swarm.Tests.Model;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Integration;

/// <summary>Real processes, real UDP on 127.0.0.1: a coordinator and three nodes on the sharded fp16 fixture.</summary>
[Collection("processes")]
public class SwarmIntegrationTests(ITestOutputHelper output)
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromMinutes(2) };

    internal static async Task<JsonNode> CompleteAsync(string url, IEnumerable<long> prompt, int maxTokens, object? extra = null)
    {
        var body = new JsonObject { ["prompt"] = new JsonArray(prompt.Select(t => (JsonNode)t).ToArray()), ["max_tokens"] = maxTokens, ["temperature"] = 0 };
        var resp = await Http.PostAsync(url + "/v1/completions", new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"));
        string text = await resp.Content.ReadAsStringAsync();
        Assert.True(resp.IsSuccessStatusCode, $"HTTP {(int)resp.StatusCode}: {text}");
        return JsonNode.Parse(text)!;
    }

    internal static long[] Tokens(JsonNode completion) => completion["choices"]![0]!["token_ids"]!.AsArray().Select(t => (long)t!).ToArray();

    [Fact]
    public async Task ThreeNodes_F32Wire_ReproduceGoldenGreedyTokens_AndF16Agreement()
    {
        using var fx = new Fixture(Fixture.Small);
        await using (var swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
        {
            Model = fx.CheckpointDir, Nodes = 3, Layers = ["0:2", "2:4", "4:6"], WireDtype = "f32", ThreadsPerNode = 1,
        }, output.WriteLine))
        {
            var status = (await swarm.GetJsonAsync("/api/swarm"))!;
            Assert.Equal(3, status["nodes"]!.AsArray().Count);
            Assert.True((bool)status["covered"]!);
            for (int p = 0; p < fx.PromptCount; p++)
            {
                var expected = fx.Ids($"greedy.{p}");
                var got = Tokens(await CompleteAsync(swarm.HttpUrl, fx.Ids($"prompt.{p}"), expected.Length));
                Assert.Equal(expected, got);
            }
        }
        // The same through an f16 wire: report agreement (activations are rounded between stages).
        await using (var swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
        {
            Model = fx.CheckpointDir, Nodes = 3, Layers = ["0:2", "2:4", "4:6"], WireDtype = "f16", ThreadsPerNode = 1,
        }, output.WriteLine))
        {
            int agree = 0, total = 0;
            for (int p = 0; p < fx.PromptCount; p++)
            {
                var expected = fx.Ids($"greedy.{p}");
                var got = Tokens(await CompleteAsync(swarm.HttpUrl, fx.Ids($"prompt.{p}"), expected.Length));
                int prefix = expected.Zip(got).TakeWhile(x => x.First == x.Second).Count();
                agree += prefix; total += expected.Length;
            }
            output.WriteLine($"f16 wire: {agree}/{total} greedy tokens agree with the fp32 reference before the first divergence");
            Assert.True(agree > 0);
        }
    }
}

[CollectionDefinition("processes", DisableParallelization = true)]
public class ProcessCollection;
