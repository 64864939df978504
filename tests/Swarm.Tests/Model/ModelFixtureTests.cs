using Swarm.Checkpoints;
using Swarm.Model;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Swarm.Tests.Model;

public class ModelFixtureTests
{
    public static TheoryData<string> Fixtures => new() { Fixture.Tiny, Fixture.Small };

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void FullForward_Logits_MatchHuggingFace(string name)
    {
        using var fx = new Fixture(name);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        using var model = StageModel.Load(ckpt, 0, ckpt.Config.NumLayers);
        for (int p = 0; p < fx.PromptCount; p++)
        {
            using var scope = NewDisposeScope();
            var ids = fx.Ref($"prompt.{p}").unsqueeze(0);
            using var cache = model.NewCache();
            var logits = model.Forward(ids, cache, allPositions: true).squeeze(0);
            var expected = fx.Ref($"logits.{p}");
            double diff = (logits - expected).abs().max().item<float>();
            Assert.True(diff <= fx.LogitTolerance, $"{name} prompt {p}: max |Δlogits| = {diff:g3} > {fx.LogitTolerance:g3}");
        }
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void GreedyDecode_WithKvCache_ReproducesGoldenTokens(string name)
    {
        using var fx = new Fixture(name);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        using var model = StageModel.Load(ckpt, 0, ckpt.Config.NumLayers);
        for (int p = 0; p < fx.PromptCount; p++)
        {
            var expected = fx.Ids($"greedy.{p}");
            var got = GreedyDecode(new[] { model }, fx.Ids($"prompt.{p}"), expected.Length);
            Assert.Equal(expected, got);
        }
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void EveryTwoAndThreeWaySplit_ReproducesLayerBoundaries(string name)
    {
        using var fx = new Fixture(name);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        int n = ckpt.Config.NumLayers;
        var splits = new List<int[]>();
        for (int a = 1; a < n; a++)
        {
            splits.Add([0, a, n]);
            for (int b = a + 1; b < n; b++) splits.Add([0, a, b, n]);
        }
        // Load every distinct range once.
        var stages = new Dictionary<(int, int), StageModel>();
        try
        {
            foreach (var s in splits)
                for (int i = 0; i + 1 < s.Length; i++)
                    if (!stages.ContainsKey((s[i], s[i + 1]))) stages[(s[i], s[i + 1])] = StageModel.Load(ckpt, s[i], s[i + 1]);
            for (int p = 0; p < fx.PromptCount; p++)
            {
                using var ids = fx.Ref($"prompt.{p}").unsqueeze(0);
                foreach (var s in splits)
                {
                    using var scope = NewDisposeScope();
                    Tensor x = ids;
                    for (int i = 0; i + 1 < s.Length; i++)
                    {
                        var stage = stages[(s[i], s[i + 1])];
                        using var cache = stage.NewCache();
                        x = stage.Forward(x, cache, allPositions: true);
                        if (stage.IsLast)
                        {
                            var expected = fx.Ref($"logits.{p}");
                            double diff = (x.squeeze(0) - expected).abs().max().item<float>();
                            Assert.True(diff <= fx.LogitTolerance, $"split {string.Join(",", s)} prompt {p}: logits off by {diff:g3}");
                        }
                        else
                        {
                            var expected = fx.Ref($"hidden.{p}.{s[i + 1] - 1}");
                            double rel = (x.squeeze(0) - expected).abs().max().item<float>() / expected.abs().max().item<float>();
                            Assert.True(rel <= 1e-4, $"split {string.Join(",", s)} prompt {p}: boundary {s[i + 1]} off by {rel:g3} relative");
                        }
                    }
                }
            }
        }
        finally
        {
            foreach (var st in stages.Values) st.Dispose();
        }
    }

    [Fact]
    public void Embed_MatchesReference()
    {
        using var fx = new Fixture(Fixture.Tiny);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        using var model = StageModel.Load(ckpt, 0, 1);
        using var scope = NewDisposeScope();
        var e = model.Embed(fx.Ref("prompt.3").unsqueeze(0)).squeeze(0);
        Assert.Equal(0.0, (e - fx.Ref("embed.3")).abs().max().item<float>(), 7);
    }

    [Fact]
    public void IncrementalDecode_EqualsFullForward()
    {
        using var fx = new Fixture(Fixture.Small);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        using var model = StageModel.Load(ckpt, 0, ckpt.Config.NumLayers);
        using var scope = NewDisposeScope();
        var ids = fx.Ref("prompt.2").unsqueeze(0); // 64 tokens
        using var full = model.NewCache();
        var all = model.Forward(ids, full, allPositions: true);
        // Prefill 20, then a chunk of 30, then one token at a time.
        using var inc = model.NewCache(initialCapacity: 8);
        var parts = new List<Tensor> { model.Forward(ids.narrow(1, 0, 20), inc, true), model.Forward(ids.narrow(1, 20, 30), inc, true) };
        for (int i = 50; i < 64; i++) parts.Add(model.Forward(ids.narrow(1, i, 1), inc, true));
        var stitched = cat(parts, 1);
        Assert.True((stitched - all).abs().max().item<float>() < 1e-3);
        Assert.Equal(64, inc.Length);
    }

    internal static long[] GreedyDecode(IReadOnlyList<StageModel> stages, long[] prompt, int newTokens)
    {
        var caches = stages.Select(s => s.NewCache()).ToArray();
        try
        {
            var result = new List<long>();
            long[] input = prompt;
            for (int step = 0; step < newTokens; step++)
            {
                using var scope = NewDisposeScope();
                Tensor x = tensor(input, ScalarType.Int64).unsqueeze(0);
                for (int i = 0; i < stages.Count; i++) x = stages[i].Forward(x, caches[i]);
                long next = x.argmax(-1).item<long>();
                result.Add(next);
                input = [next];
            }
            return result.ToArray();
        }
        finally
        {
            foreach (var c in caches) c.Dispose();
        }
    }
}
