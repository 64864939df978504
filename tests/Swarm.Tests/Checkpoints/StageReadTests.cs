using Swarm.Checkpoints;
using Swarm.Model;
using Swarm.Tests.Model;
using Swarm.Tests.Presets;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Swarm.Tests.Checkpoints;

/// <summary>A stage reads, opens and holds only its own tensors: bytes read and memory scale with the stage, not the model.</summary>
public class StageReadTests(ITestOutputHelper output)
{
    /// <summary>HF names of the tensors stage [a, b) needs.</summary>
    private static List<string> StageTensors(ModelConfig c, int a, int b)
    {
        var names = new List<string>();
        if (a == 0) names.Add("gpt_neox.embed_in.weight");
        for (int l = a; l < b; l++)
            names.AddRange(PresetWriter.TensorShapes(c).Select(t => t.Name).Where(n => n.StartsWith($"gpt_neox.layers.{l}.", StringComparison.Ordinal)));
        if (b == c.NumLayers) names.AddRange(["gpt_neox.final_layer_norm.weight", "gpt_neox.final_layer_norm.bias", "embed_out.weight"]);
        return names;
    }

    private static (long Bytes, long Elements) Sizes(Checkpoint ckpt, IEnumerable<string> names) =>
        names.Select(ckpt.Entry).Aggregate((0L, 0L), (acc, e) => (acc.Item1 + e.End - e.Begin, acc.Item2 + e.ElementCount));

    [Theory]
    [InlineData(0, 2)]
    [InlineData(2, 4)]
    [InlineData(3, 4)]
    [InlineData(4, 6)]
    [InlineData(0, 6)]
    public void ShardedFixture_StageReadsExactlyItsOwnTensors(int a, int b)
    {
        using var fx = new Fixture(Fixture.Small);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        var names = StageTensors(ckpt.Config, a, b);
        Assert.Empty(ckpt.OpenedFiles); // opening the folder reads only config.json and the index
        Assert.Equal(0, ckpt.BytesRead);

        using var stage = StageModel.Load(ckpt, a, b);
        long bytesRead = ckpt.BytesRead;
        var opened = ckpt.OpenedFiles.Order().ToArray(); // before Entry() below opens shards to read their headers

        var (ownBytes, ownElements) = Sizes(ckpt, names);
        var (allBytes, _) = Sizes(ckpt, PresetWriter.TensorShapes(ckpt.Config).Select(t => t.Name));
        Assert.Equal(ownBytes, bytesRead);
        // only the shards that hold the stage's tensors are opened
        var expectedFiles = names.Select(n => ckpt.FileOf(n)!).Distinct().Order().ToArray();
        Assert.Equal(expectedFiles, opened);
        // held in memory: the same tensors, as f32
        Assert.Equal(ownElements * 4, stage.WeightBytes);
        output.WriteLine($"stage [{a},{b}): read {ownBytes:N0} of {allBytes:N0} bytes from {opened.Length} of 5 shards, holds {stage.WeightBytes:N0} bytes");
    }

    [Fact]
    public void MiddleStage_NeverOpensTheEmbeddingShards()
    {
        using var fx = new Fixture(Fixture.Small);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        using var stage = StageModel.Load(ckpt, 2, 4);
        Assert.DoesNotContain(ckpt.FileOf("gpt_neox.embed_in.weight"), ckpt.OpenedFiles);
        Assert.DoesNotContain(ckpt.FileOf("embed_out.weight"), ckpt.OpenedFiles);
        Assert.Throws<InvalidOperationException>(() => stage.Embed(ones(1, 1, ScalarType.Int64)));
    }

    [Fact]
    public void BigVocabulary_MiddleStageReadsAndHoldsAFractionOfTheModel()
    {
        // Embeddings dominate (vocab 8192 × hidden 64 twice) as in the small Pythias: a middle stage of one
        // layer must read and hold about that layer's share, not the model.
        var config = new ModelConfig { HiddenSize = 64, NumHeads = 4, NumLayers = 4, IntermediateSize = 256, VocabSize = 8192 };
        using var tmp = new TempDir();
        PresetWriter.Write(config, tmp.Path, ScalarType.BFloat16, seed: 1, maxShardBytes: 64 * 1024);
        using var ckpt = Checkpoint.Open(tmp.Path);
        long total = PresetWriter.TensorShapes(config).Sum(t => t.Shape.Aggregate(1L, (x, y) => x * y)) * 2;
        long layer = StageTensors(config, 1, 2).Sum(n => ckpt.Entry(n).End - ckpt.Entry(n).Begin);

        using var middle = StageModel.Load(ckpt, 1, 2);
        Assert.Equal(layer, ckpt.BytesRead);
        Assert.Equal(layer * 2, middle.WeightBytes); // bf16 on disk → f32 in memory
        Assert.True(ckpt.BytesRead * 20 < total, $"middle stage read {ckpt.BytesRead} of {total} bytes");
        output.WriteLine($"middle stage: read {ckpt.BytesRead:N0} of {total:N0} bytes ({100.0 * ckpt.BytesRead / total:F1}%), holds {middle.WeightBytes:N0}");

        long before = ckpt.BytesRead;
        using var rows = ckpt.ReadRows("embed_out.weight", [8192, 64], 100, 10, ScalarType.Float32);
        Assert.Equal(10 * 64 * 2, ckpt.BytesRead - before); // a row slice reads only its rows
    }
}
