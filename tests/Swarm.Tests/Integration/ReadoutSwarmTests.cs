using System.Text.Json.Nodes;
using Swarm.Cli;
using Swarm.Tests.Model;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Swarm.Tests.Integration;

/// <summary>
/// logprobs + echo and <c>swarm.hidden_states</c> through real processes: a coordinator and two nodes (one per half of
/// the model, f32 wire) on the golden fixtures, asked over HTTP as lm-evaluation-harness asks (echo, logprobs, max_tokens
/// 0 or 1). Every prompt position's logprob and top-5 equal log-softmax of the HF reference logits, and every layer's
/// hidden states equal the reference's <c>hidden.P.L</c>, each layer shipped by the node that computed it.
/// </summary>
[Collection("processes")]
public class ReadoutSwarmTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(Fixture.Tiny)]
    [InlineData(Fixture.Small)]
    public async Task TwoNodes_EchoLogprobsAndHiddenStates_EqualTheHfReference_StreamedOrNot(string name)
    {
        using var fx = new Fixture(name);
        int layers = fx.Name == Fixture.Tiny ? 4 : 6, split = layers / 2;
        await using var swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
        {
            Model = fx.CheckpointDir, Nodes = 2, Layers = [$"0:{split}", $"{split}:{layers}"], WireDtype = "f32", ThreadsPerNode = 1,
        }, output.WriteLine);
        double worstLogprob = 0, worstHidden = 0;
        for (int p = 0; p < fx.PromptCount; p++)
        {
            long[] prompt = fx.Ids($"prompt.{p}");
            long greedy = fx.Ids($"greedy.{p}")[0];
            var body = SwarmClient.Body(prompt, maxTokens: p % 2);   // both of lm-evaluation-harness's forms: 0 and 1 new tokens
            body["echo"] = true;
            body["logprobs"] = 5;
            body["swarm"] = new JsonObject
            {
                ["hidden_states"] = new JsonObject { ["layers"] = new JsonArray([.. Enumerable.Range(0, layers).Select(l => (JsonNode)l)]), ["positions"] = "all" },
            };
            var (status, json) = await SwarmClient.PostAsync(swarm.HttpUrl, body.ToJsonString());
            Assert.True(status == 200, json?.ToJsonString());
            var choice = json!["choices"]![0]!;
            long[] expectedTokens = p % 2 == 1 ? [.. prompt, greedy] : prompt;
            Assert.Equal(p % 2 == 1 ? [greedy] : [], choice["token_ids"]!.AsArray().Select(t => (long)t!));
            Assert.Equal("length", (string?)choice["finish_reason"]);
            var lp = choice["logprobs"]!;
            Assert.Equal(expectedTokens.Select(t => $"token_id:{t}"), lp["tokens"]!.AsArray().Select(t => (string)t!));
            Assert.Null(lp["token_logprobs"]![0]);
            Assert.Null(lp["top_logprobs"]![0]);

            using (var scope = NewDisposeScope())
            {
                var logp = fx.Ref($"logits.{p}").log_softmax(-1);
                for (int i = 1; i < expectedTokens.Length; i++)
                {
                    // Position i's token is predicted by the logits of position i - 1.
                    worstLogprob = Math.Max(worstLogprob, Math.Abs((double)lp["token_logprobs"]![i]! - logp[i - 1, expectedTokens[i]].item<float>()));
                    var top = lp["top_logprobs"]![i]!.AsObject().ToDictionary(kv => kv.Key, kv => (double)kv.Value!);
                    var (values, ids) = logp[i - 1].topk(5);
                    var want = ids.data<long>().ToArray().Zip(values.data<float>().ToArray()).ToList();
                    Assert.All(want, w => Assert.Contains($"token_id:{w.First}", top.Keys));
                    Assert.Contains($"token_id:{expectedTokens[i]}", top.Keys);   // the token itself is always listed
                    foreach (var (id, value) in want) worstLogprob = Math.Max(worstLogprob, Math.Abs(top[$"token_id:{id}"] - value));
                }
            }

            var hidden = json["swarm"]!["hidden_states"]!.AsArray();
            Assert.Equal(Enumerable.Range(0, layers), hidden.Select(h => (int)h!["layer"]!));
            Assert.Equal(2, json["swarm"]!["stages"]!.AsArray().Count);
            foreach (var h in hidden)
            {
                Assert.Equal("float32", (string?)h!["dtype"]);
                var shape = h["shape"]!.AsArray().Select(d => (long)d!).ToArray();
                Assert.Equal([prompt.Length, fx.Name == Fixture.Tiny ? 64 : 256], shape);
                using var scope = NewDisposeScope();
                var got = tensor(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(Convert.FromBase64String((string)h["data"]!)).ToArray()).reshape(shape);
                var want = fx.Ref($"hidden.{p}.{(int)h["layer"]!}");
                double scale = fx.Name == Fixture.Tiny ? 1 : want.abs().max().item<float>();   // fixtures README: fp16 relative to the max
                worstHidden = Math.Max(worstHidden, (got - want).abs().max().item<float>() / scale);
            }

            // The same request streamed: the first chunk echoes the prompt, the chunks' logprobs together are the
            // unstreamed ones, and the last chunk's swarm object carries the same hidden states.
            body["stream"] = true;
            var events = await SwarmClient.StreamEventsAsync(swarm.HttpUrl, body.ToJsonString());
            var chunks = events.Where(e => e["choices"]!.AsArray().Count > 0).Select(e => e["choices"]![0]!["logprobs"]).OfType<JsonNode>().ToList();
            foreach (string key in new[] { "tokens", "token_logprobs", "text_offset" })
                Assert.Equal(lp[key]!.ToJsonString(), new JsonArray([.. chunks.SelectMany(c => c[key]!.AsArray()).Select(n => n?.DeepClone())]).ToJsonString());
            Assert.Equal(hidden.ToJsonString(), events[^1]["swarm"]!["hidden_states"]!.ToJsonString());
        }
        output.WriteLine($"{name} through 2 nodes: max |Δlogprob| {worstLogprob:E2}, max |Δhidden| {worstHidden:E2}");
        Assert.True(worstLogprob <= fx.LogitTolerance, $"max |Δlogprob| {worstLogprob} > {fx.LogitTolerance}");
        Assert.True(worstHidden <= 1e-4, $"max |Δhidden| {worstHidden} > 1e-4");
    }
}
