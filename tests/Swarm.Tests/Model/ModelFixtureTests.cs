using Swarm.Checkpoints;
using Swarm.Model;
using Swarm.Node;
using Swarm.Sampling;
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
            using var session = new StageSession(model);
            var logits = session.Forward(ids, allPositions: true);
            var expected = fx.Ref($"logits.{p}");
            double diff = (logits - expected).abs().max().item<float>();
            Assert.True(diff <= fx.LogitTolerance, $"{name} prompt {p}: max |Δlogits| = {diff:g3} > {fx.LogitTolerance:g3}");
        }
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void GreedyDecode_ThroughLocalPipeline_ReproducesGoldenTokens(string name)
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
                        using var session = new StageSession(stage);
                        x = session.Forward(x, allPositions: true);
                        if (stage.IsLast)
                        {
                            var expected = fx.Ref($"logits.{p}");
                            double diff = (x - expected).abs().max().item<float>();
                            Assert.True(diff <= fx.LogitTolerance, $"split {string.Join(",", s)} prompt {p}: logits off by {diff:g3}");
                        }
                        else
                        {
                            var expected = fx.Ref($"hidden.{p}.{s[i + 1] - 1}");
                            double rel = (x - expected).abs().max().item<float>() / expected.abs().max().item<float>();
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

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void IncrementalDecode_EqualsFullForward(bool fragmented)
    {
        using var fx = new Fixture(Fixture.Small);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        using var model = StageModel.Load(ckpt, 0, ckpt.Config.NumLayers);
        using var scope = NewDisposeScope();
        var ids = fx.Ref("prompt.2"); // 64 tokens
        using var full = new StageSession(model);
        var all = full.Forward(ids, allPositions: true);
        // Prefill 20, then a chunk of 30, then one token at a time.
        using var inc = new StageSession(model, fragmented);
        var parts = new List<Tensor> { inc.Forward(ids.narrow(0, 0, 20), true), inc.Forward(ids.narrow(0, 20, 30), true) };
        for (int i = 50; i < 64; i++) parts.Add(inc.Forward(ids.narrow(0, i, 1), true));
        var stitched = cat(parts, 0);
        Assert.True((stitched - all).abs().max().item<float>() < 1e-3);
        Assert.Equal(64, inc.Length);
        Assert.Equal(fragmented, inc.IsGathered);
    }

    /// <summary>Greedy tokens of <see cref="LocalPipeline"/> (what <c>swarm run</c> runs) through a chain of stages (left open).</summary>
    internal static long[] GreedyDecode(IReadOnlyList<StageModel> stages, long[] prompt, int newTokens)
    {
        using var pipeline = new LocalPipeline(stages, leaveOpen: true);
        return [.. pipeline.Generate([.. prompt.Select(t => (int)t)], SamplingOptions.Greedy(newTokens)).TokenIds.Select(t => (long)t)];
    }
}
