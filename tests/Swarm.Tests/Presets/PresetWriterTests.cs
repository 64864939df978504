using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Swarm.Checkpoints;
using Swarm.Model;
using ModelPresets = Swarm.Model.Presets;
using Xunit;
using static TorchSharp.torch;

namespace Swarm.Tests.Presets;

public class PresetWriterTests
{
    // A 2-layer model small enough to write in milliseconds.
    private static readonly ModelConfig Tiny = ModelPresets.Get("pythia-70m") with
    {
        NumLayers = 2, HiddenSize = 64, NumHeads = 4, IntermediateSize = 256, VocabSize = 1000,
    };

    private static string Hash(string dir) => string.Join(",",
        Directory.GetFiles(dir).Order().Select(f => Path.GetFileName(f) + ":" + Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f)))));

    [Fact]
    public void Pythia70m_LoadsThroughCheckpointOpen_WithEveryTensorShaped()
    {
        using var dir = new TempDir();
        var result = PresetWriter.Write("pythia-70m", dir.Path, ScalarType.Float16, seed: 1);
        Assert.Equal(["model.safetensors"], result.WeightFiles);
        using var ckpt = Checkpoint.Open(dir.Path);
        var c = ckpt.Config;
        Assert.Equal((6, 512, 8, 2048, 50304, "float16"), (c.NumLayers, c.HiddenSize, c.NumHeads, c.IntermediateSize, c.VocabSize, c.TorchDtype));
        var expected = PresetWriter.TensorShapes(c);
        Assert.Equal(4 + 12 * 6, expected.Count);
        foreach (var (name, shape) in expected)
        {
            var e = ckpt.Entry(name);
            Assert.Equal(shape, e.Shape);
            Assert.Equal("F16", e.Dtype);
        }
        Assert.Equal(70_426_624L * 2, result.TotalBytes); // pythia-70m: 70.4M parameters (HF count, untied)
        Assert.Equal(expected.Sum(t => t.Shape.Aggregate(1L, (a, b) => a * b)) * 2, result.TotalBytes);
        using var qkv = ckpt.Read("gpt_neox.layers.3.attention.query_key_value.weight", [1536, 512], ScalarType.Float32);
        Assert.InRange(qkv.std().item<float>(), 0.0195, 0.0205);
        Assert.InRange(qkv.mean().item<float>(), -0.001, 0.001);
        using var ln = ckpt.Read("gpt_neox.layers.5.input_layernorm.weight", [512], ScalarType.Float32);
        Assert.InRange(ln.mean().item<float>(), 0.99, 1.01);
        var gen = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, "generation_config.json")))!;
        Assert.Equal(0, (int)gen["eos_token_id"]!);
    }

    [Theory]
    [InlineData(ScalarType.Float32, "F32", "float32")]
    [InlineData(ScalarType.Float16, "F16", "float16")]
    [InlineData(ScalarType.BFloat16, "BF16", "bfloat16")]
    public void EveryDtype_Loads(ScalarType dtype, string stored, string configName)
    {
        using var dir = new TempDir();
        PresetWriter.Write(Tiny, dir.Path, dtype, seed: 5);
        using var ckpt = Checkpoint.Open(dir.Path);
        Assert.Equal(configName, ckpt.Config.TorchDtype);
        Assert.Equal(stored, ckpt.Entry("embed_out.weight").Dtype);
        using var w = ckpt.Read("embed_out.weight", [1000, 64], ScalarType.Float32);
        Assert.True(w.abs().max().item<float>() > 0);
    }

    [Fact]
    public void HalfPrecision_IsTheFloat32CheckpointRounded()
    {
        using var dir = new TempDir();
        PresetWriter.Write(Tiny, dir.Sub("f32"), ScalarType.Float32, seed: 5);
        PresetWriter.Write(Tiny, dir.Sub("bf16"), ScalarType.BFloat16, seed: 5);
        using var a = Checkpoint.Open(dir.Sub("f32"));
        using var b = Checkpoint.Open(dir.Sub("bf16"));
        using var wa = a.Read("gpt_neox.layers.1.mlp.dense_4h_to_h.weight", [64, 256], ScalarType.Float32);
        using var wb = b.Read("gpt_neox.layers.1.mlp.dense_4h_to_h.weight", [64, 256], ScalarType.BFloat16);
        using var rounded = wa.to(ScalarType.BFloat16);
        TensorAssert.Same(rounded, wb);
    }

    [Fact]
    public void SameSeed_SameBytes_DifferentSeed_DifferentBytes()
    {
        using var dir = new TempDir();
        PresetWriter.Write(Tiny, dir.Sub("a"), ScalarType.Float16, seed: 7);
        PresetWriter.Write(Tiny, dir.Sub("b"), ScalarType.Float16, seed: 7);
        PresetWriter.Write(Tiny, dir.Sub("c"), ScalarType.Float16, seed: 8);
        Assert.Equal(Hash(dir.Sub("a")), Hash(dir.Sub("b")));
        var wa = File.ReadAllBytes(Path.Combine(dir.Sub("a"), "model.safetensors"));
        var wc = File.ReadAllBytes(Path.Combine(dir.Sub("c"), "model.safetensors"));
        Assert.Equal(wa.Length, wc.Length);
        Assert.False(wa.AsSpan().SequenceEqual(wc));
    }

    [Fact]
    public void SmallShardLimit_WritesShardsAndIndex_ThatLoad()
    {
        using var dir = new TempDir();
        long limit = 300_000; // embed_in/embed_out are 128 kB each in f16, a layer ~100 kB
        var result = PresetWriter.Write(Tiny, dir.Path, ScalarType.Float16, seed: 3, maxShardBytes: limit);
        Assert.True(result.WeightFiles.Count > 1);
        Assert.Equal($"model-00001-of-{result.WeightFiles.Count:D5}.safetensors", result.WeightFiles[0]);
        Assert.False(File.Exists(Path.Combine(dir.Path, "model.safetensors")));
        foreach (var f in result.WeightFiles)
            Assert.True(new FileInfo(Path.Combine(dir.Path, f)).Length <= limit + 4096, $"{f} exceeds the shard limit");
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, "model.safetensors.index.json")))!;
        Assert.Equal(result.TotalBytes, (long)index["metadata"]!["total_size"]!);

        using var ckpt = Checkpoint.Open(dir.Path);
        foreach (var (name, shape) in PresetWriter.TensorShapes(Tiny))
        {
            Assert.Equal(shape, ckpt.Entry(name).Shape);
        }
        // Same values as the unsharded checkpoint with the same seed.
        PresetWriter.Write(Tiny, dir.Sub("single"), ScalarType.Float16, seed: 3);
        using var single = Checkpoint.Open(dir.Sub("single"));
        using var x = ckpt.Read("embed_out.weight", [1000, 64], ScalarType.Float16);
        using var y = single.Read("embed_out.weight", [1000, 64], ScalarType.Float16);
        TensorAssert.Same(x, y);
    }

    [Fact]
    public void Rewrite_ReplacesAnEarlierShardedCheckpoint()
    {
        using var dir = new TempDir();
        PresetWriter.Write(Tiny, dir.Path, ScalarType.Float16, seed: 3, maxShardBytes: 300_000);
        PresetWriter.Write(Tiny, dir.Path, ScalarType.Float32, seed: 3);
        Assert.False(File.Exists(Path.Combine(dir.Path, "model.safetensors.index.json")));
        Assert.Empty(Directory.GetFiles(dir.Path, "model-*"));
        using var ckpt = Checkpoint.Open(dir.Path);
        Assert.Equal("F32", ckpt.Entry("gpt_neox.embed_in.weight").Dtype);
    }

    [Fact]
    public void Progress_ReachesTotal_Monotonically()
    {
        using var dir = new TempDir();
        var reports = new List<(long done, long total)>();
        var result = PresetWriter.Write(Tiny, dir.Path, ScalarType.Float32, seed: 1, new SyncProgress(reports.Add));
        Assert.Equal((0L, result.TotalBytes), reports[0]);
        Assert.Equal((result.TotalBytes, result.TotalBytes), reports[^1]);
        Assert.True(reports.Zip(reports.Skip(1)).All(p => p.Second.done > p.First.done));
    }

    [Fact]
    public void UnsupportedDtypeOrPreset_ClearError()
    {
        using var dir = new TempDir();
        Assert.Contains("Float32, Float16 or BFloat16", Assert.Throws<ArgumentException>(() => PresetWriter.Write(Tiny, dir.Path, ScalarType.Int8, 1)).Message);
        Assert.Contains("unknown preset 'pythia-7b'", Assert.Throws<ArgumentException>(() => PresetWriter.Write("pythia-7b", dir.Path, ScalarType.Float16, 1)).Message);
    }

    internal sealed class SyncProgress(Action<(long done, long total)> report) : IProgress<(long done, long total)>
    {
        public void Report((long done, long total) value) => report(value);
    }
}
