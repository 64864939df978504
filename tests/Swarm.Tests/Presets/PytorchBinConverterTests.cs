using System.Collections;
using System.Text.Json.Nodes;
using Swarm.Checkpoints;
using Swarm.Model;
using TorchSharp.PyBridge;
using Xunit;
using static TorchSharp.torch;

namespace Swarm.Tests.Presets;

public class PytorchBinConverterTests
{
    private static readonly string Fixtures = Path.Combine(AppContext.BaseDirectory, "fixtures");
    private static readonly string TinyCheckpoint = Path.Combine(Fixtures, "neox-tiny", "checkpoint");

    private static string CopyOf(string sourceDir, TempDir dir)
    {
        foreach (var f in Directory.GetFiles(sourceDir)) File.Copy(f, Path.Combine(dir.Path, Path.GetFileName(f)));
        return dir.Path;
    }

    private static void AssertSameWeights(string expectedDir, string actualDir)
    {
        using var expected = SafetensorsFile.Open(Path.Combine(expectedDir, "model.safetensors"));
        using var actual = Checkpoint.Open(actualDir);
        foreach (var (name, entry) in expected.Entries)
        {
            Assert.Equal(entry.Shape, actual.Entry(name).Shape);
            Assert.Equal(entry.Dtype, actual.Entry(name).Dtype);
            using var e = expected.Read(name);
            using var a = actual.Read(name, entry.Shape, e.dtype);
            TensorAssert.Same(e, a);
        }
    }

    [Fact]
    public void TorchSavedBin_ConvertsToSafetensors_WithTheSameWeights_AndWithoutBuffers()
    {
        using var dir = new TempDir();
        string ckpt = CopyOf(Path.Combine(Fixtures, "pytorch-bin", "neox-tiny"), dir);
        Assert.True(PytorchBinConverter.NeedsConversion(ckpt));

        var result = PytorchBinConverter.Convert(ckpt);

        Assert.Equal(["model.safetensors"], result.WeightFiles);
        Assert.False(PytorchBinConverter.NeedsConversion(ckpt));
        AssertSameWeights(TinyCheckpoint, ckpt);
        using var converted = SafetensorsFile.Open(Path.Combine(ckpt, "model.safetensors"));
        Assert.DoesNotContain(converted.Entries.Keys, n => n.EndsWith(".attention.bias") || n.Contains("masked_bias") || n.Contains("inv_freq"));
        Assert.Equal(4 + 12 * 4, converted.Entries.Count);
    }

    [Fact]
    public void ShardedBin_ConvertsShardByShard_WithIndex()
    {
        using var dir = new TempDir();
        File.Copy(Path.Combine(TinyCheckpoint, "config.json"), Path.Combine(dir.Path, "config.json"));
        // Two .bin shards written by PyBridge's own pickler (torch's zip format), split as HF would.
        using var source = SafetensorsFile.Open(Path.Combine(TinyCheckpoint, "model.safetensors"));
        var names = source.Entries.Keys.Order().ToList();
        var map = new JsonObject();
        for (int s = 0; s < 2; s++)
        {
            string file = $"pytorch_model-{s + 1:D5}-of-00002.bin";
            var part = new Hashtable();
            foreach (var name in names.Where((_, i) => i % 2 == s))
            {
                part[name] = source.Read(name);
                map[name] = file;
            }
            PyTorchPickler.PickleStateDict(Path.Combine(dir.Path, file), part);
            foreach (DictionaryEntry kv in part) ((Tensor)kv.Value!).Dispose();
        }
        File.WriteAllText(Path.Combine(dir.Path, "pytorch_model.bin.index.json"), new JsonObject { ["weight_map"] = map }.ToJsonString());

        var result = PytorchBinConverter.Convert(dir.Path);

        Assert.Equal(["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"], result.WeightFiles);
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, "model.safetensors.index.json")))!;
        Assert.Equal(names.Count, index["weight_map"]!.AsObject().Count);
        Assert.Equal(result.TotalBytes, (long)index["metadata"]!["total_size"]!);
        AssertSameWeights(TinyCheckpoint, dir.Path);
    }

    [Fact]
    public void LegacyFormat_ClearError()
    {
        using var dir = new TempDir();
        File.Copy(Path.Combine(Fixtures, "pytorch-bin", "legacy.bin"), Path.Combine(dir.Path, "pytorch_model.bin"));
        var e = Assert.Throws<CheckpointException>(() => PytorchBinConverter.Convert(dir.Path));
        Assert.Contains("pytorch_model.bin", e.Message);
        Assert.Contains("torch ≥ 1.6", e.Message);
    }

    [Fact]
    public void GarbageOrMissing_ClearErrors()
    {
        using var dir = new TempDir();
        Assert.Contains("no pytorch_model.bin", Assert.Throws<CheckpointException>(() => PytorchBinConverter.Convert(dir.Path)).Message);
        File.WriteAllBytes(Path.Combine(dir.Path, "pytorch_model.bin"), [0x50, 0x4b, 0x03, 0x04, 1, 2, 3, 4, 5]);
        var e = Assert.Throws<CheckpointException>(() => PytorchBinConverter.Convert(dir.Path));
        Assert.Contains("pytorch_model.bin", e.Message);
        Assert.False(File.Exists(Path.Combine(dir.Path, "model.safetensors")));
    }
}
