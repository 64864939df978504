using System.Text;
using System.Text.Json.Nodes;
using Swarm.Checkpoints;
using Swarm.Model;
using Swarm.Tests.Engine;
using Swarm.Tests.Presets;
using Xunit;
using static TorchSharp.torch;

namespace Swarm.Tests.Checkpoints;

/// <summary>
/// Every way a checkpoint folder can be broken gives a <see cref="CheckpointException"/> whose message names the
/// file or tensor and says what is wrong. Each case goes through Checkpoint.Open + StageModel.Load on real files.
/// </summary>
public class CheckpointErrorTests : IDisposable
{
    private static readonly NeoXSpec Tiny = new(Hidden: 16, Heads: 2, Layers: 2, Vocab: 32, RotaryPct: 0.25, RotaryBase: 10000,
        Parallel: true, Eps: 1e-5, Dtype: ScalarType.Float32, RopeParameters: false);

    private readonly TempDir _tmp = new();
    private string Dir => _tmp.Path;
    private string Weights => _tmp.Sub("model.safetensors");

    public void Dispose() => _tmp.Dispose();

    /// <summary>Opens the folder and loads the whole model; returns the exception it must throw.</summary>
    private CheckpointException LoadFails(string? dir = null, int start = 0, int end = 2)
    {
        return Assert.Throws<CheckpointException>(() =>
        {
            using var ckpt = Checkpoint.Open(dir ?? Dir);
            using var model = StageModel.Load(ckpt, start, end);
        });
    }

    private void WriteValid() => RandomCheckpoint.Write(Tiny, Dir, seed: 5);

    private static void Contains(CheckpointException e, params string[] parts)
    {
        foreach (var p in parts) Assert.Contains(p, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ValidCheckpoint_Loads()
    {
        // the baseline every other case breaks one thing of
        WriteValid();
        using var ckpt = Checkpoint.Open(Dir);
        using var model = StageModel.Load(ckpt, 0, 2);
        Assert.Equal(2, model.LayerCount);
    }

    [Fact]
    public void FolderMissing()
    {
        string missing = _tmp.Sub("nowhere");
        var e = LoadFails(missing);
        Contains(e, missing, "not found");
    }

    [Fact]
    public void ConfigJsonMissing()
    {
        WriteValid();
        File.Delete(_tmp.Sub("config.json"));
        Contains(LoadFails(), "config.json", "not found", Dir);
    }

    [Fact]
    public void ConfigJsonInvalid()
    {
        WriteValid();
        File.WriteAllText(_tmp.Sub("config.json"), "{ \"model_type\": \"gpt_neox\", ");
        Contains(LoadFails(), _tmp.Sub("config.json"), "invalid JSON");
    }

    [Fact]
    public void ModelTypeNotGptNeoX()
    {
        WriteValid();
        EditConfig(o => o["model_type"] = "llama");
        Contains(LoadFails(), _tmp.Sub("config.json"), "model_type", "'llama'", "gpt_neox");
    }

    [Theory]
    [InlineData("hidden_size")]
    [InlineData("num_hidden_layers")]
    [InlineData("num_attention_heads")]
    [InlineData("vocab_size")]
    public void RequiredConfigFieldMissing(string field)
    {
        WriteValid();
        EditConfig(o => o.Remove(field));
        Contains(LoadFails(), _tmp.Sub("config.json"), $"'{field}'", "missing");
    }

    [Fact]
    public void HiddenSizeNotDivisibleByHeads()
    {
        WriteValid();
        EditConfig(o => o["num_attention_heads"] = 3);
        Contains(LoadFails(), _tmp.Sub("config.json"), "hidden_size 16", "num_attention_heads 3");
    }

    [Fact]
    public void WeightsFileMissing()
    {
        WriteValid();
        File.Delete(Weights);
        Contains(LoadFails(), "no model.safetensors or model.safetensors.index.json", Dir);
    }

    [Fact]
    public void IndexNamesMissingShard()
    {
        WriteSharded();
        string shard = Directory.GetFiles(Dir, "model-00002-of-*.safetensors").Single();
        File.Delete(shard);
        Contains(LoadFails(), "model.safetensors.index.json", Path.GetFileName(shard), "missing");
    }

    [Fact]
    public void IndexInvalid()
    {
        WriteSharded();
        File.WriteAllText(_tmp.Sub("model.safetensors.index.json"), "{\"metadata\": {}}");
        Contains(LoadFails(), "model.safetensors.index.json", "weight_map");
        File.WriteAllText(_tmp.Sub("model.safetensors.index.json"), "{\"weight_map\": ");
        Contains(LoadFails(), "model.safetensors.index.json", "invalid JSON");
    }

    [Fact]
    public void IndexPointsAtShardWithoutTheTensor()
    {
        WriteSharded();
        const string name = "gpt_neox.layers.1.attention.dense.weight";
        string index = _tmp.Sub("model.safetensors.index.json");
        var o = JsonNode.Parse(File.ReadAllText(index))!.AsObject();
        string wrong = o["weight_map"]!.AsObject().Select(kv => (string)kv.Value!).First(f => f != (string)o["weight_map"]![name]!);
        o["weight_map"]![name] = wrong;
        File.WriteAllText(index, o.ToJsonString());
        Contains(LoadFails(), wrong, name, "missing from the file");
    }

    [Fact]
    public void TensorMissing_NamesTheTensor_AndOnlyStagesNeedingItFail()
    {
        const string name = "gpt_neox.layers.1.mlp.dense_4h_to_h.bias";
        WriteCustom(drop: name);
        Contains(LoadFails(), $"'{name}'", "missing", Dir);
        // layer 0's stage does not need it
        using var ckpt = Checkpoint.Open(Dir);
        using var first = StageModel.Load(ckpt, 0, 1);
        Assert.True(first.IsFirst);
    }

    [Theory]
    [InlineData("gpt_neox.layers.0.attention.query_key_value.weight", new long[] { 48, 17 }, "[48, 16]")]
    [InlineData("gpt_neox.layers.1.input_layernorm.bias", new long[] { 15 }, "[16]")]
    [InlineData("embed_out.weight", new long[] { 31, 16 }, "[32, 16]")]
    [InlineData("gpt_neox.embed_in.weight", new long[] { 16, 32 }, "[32, 16]")]
    public void WrongShape_NamesTensorActualAndExpected(string name, long[] shape, string expected)
    {
        WriteCustom(reshape: (name, shape));
        Contains(LoadFails(), $"'{name}'", $"[{string.Join(", ", shape)}]", expected, "model.safetensors");
    }

    [Theory]
    [InlineData(0.6)]   // cut in the data section
    [InlineData(0.999)] // one tensor short by a few bytes
    public void TruncatedFile_DataSection(double keep)
    {
        WriteValid();
        Truncate(Weights, (long)(new FileInfo(Weights).Length * keep));
        Contains(LoadFails(), Weights, "truncated");
    }

    [Theory]
    [InlineData(3)]   // not even the length prefix
    [InlineData(100)] // inside the JSON header
    public void TruncatedFile_Header(long keep)
    {
        WriteValid();
        Truncate(Weights, keep);
        Contains(LoadFails(), Weights, "truncated");
    }

    [Fact]
    public void TruncatedShard_FailsWhenTheStageThatNeedsItLoads()
    {
        WriteSharded();
        string last = Directory.GetFiles(Dir, "model-*.safetensors").Order().Last();
        Truncate(last, new FileInfo(last).Length - 10);
        // the folder opens (shards are opened lazily); the last stage's load names the shard
        using var ckpt = Checkpoint.Open(Dir);
        var e = Assert.Throws<CheckpointException>(() => StageModel.Load(ckpt, 1, 2));
        Contains(e, last, "truncated");
    }

    [Theory]
    [InlineData(-1L)]           // all 0xFF
    [InlineData(0L)]
    [InlineData(1L << 40)]      // absurd
    public void CorruptHeader_GarbageLength(long length)
    {
        WriteValid();
        var bytes = File.ReadAllBytes(Weights);
        BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), length);
        File.WriteAllBytes(Weights, bytes);
        Contains(LoadFails(), Weights, "header");
    }

    [Fact]
    public void CorruptHeader_InvalidJson()
    {
        WriteValid();
        var bytes = File.ReadAllBytes(Weights);
        bytes[8] = (byte)'['; bytes[9] = (byte)'x'; // "[x" is not JSON
        File.WriteAllBytes(Weights, bytes);
        Contains(LoadFails(), Weights, "corrupt safetensors header");
    }

    [Fact]
    public void CorruptHeader_NotAnObject()
    {
        WriteValid();
        RewriteHeader(Weights, _ => "[1, 2, 3]");
        Contains(LoadFails(), Weights, "corrupt safetensors header", "not a JSON object");
    }

    [Fact]
    public void CorruptHeader_OffsetsInconsistentWithShape()
    {
        const string name = "gpt_neox.layers.0.attention.dense.weight";
        WriteValid();
        RewriteHeader(Weights, h =>
        {
            var offs = h[name]!["data_offsets"]!.AsArray();
            h[name]!["data_offsets"] = new JsonArray((long)offs[0]!, (long)offs[1]! - 4);
            return h.ToJsonString();
        });
        Contains(LoadFails(), Weights, $"'{name}'", "data_offsets", "[16, 16]");
    }

    [Fact]
    public void CorruptHeader_EntryWithoutShape()
    {
        const string name = "gpt_neox.final_layer_norm.bias";
        WriteValid();
        RewriteHeader(Weights, h =>
        {
            h[name]!.AsObject().Remove("shape");
            return h.ToJsonString();
        });
        Contains(LoadFails(), Weights, $"'{name}'", "corrupt");
    }

    [Fact]
    public void UnsupportedDtype()
    {
        const string name = "gpt_neox.layers.1.attention.dense.weight";
        WriteValid();
        RewriteHeader(Weights, h =>
        {
            // 1-byte float8: a real safetensors dtype, with offsets made consistent with it
            h[name]!["dtype"] = "F8_E4M3";
            return h.ToJsonString();
        });
        Contains(LoadFails(), Weights, $"'{name}'", "unsupported dtype F8_E4M3");
    }

    // ---- helpers that write broken checkpoints ----

    private void EditConfig(Action<JsonObject> edit)
    {
        string path = _tmp.Sub("config.json");
        var o = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(o);
        File.WriteAllText(path, o.ToJsonString());
    }

    private void WriteSharded()
    {
        // ~ 4 KB shards: several files, layer 1 and the head in later shards than embed_in
        PresetWriter.Write(Tiny.ToConfig(), Dir, ScalarType.Float32, seed: 3, maxShardBytes: 4096);
        Assert.True(File.Exists(_tmp.Sub("model.safetensors.index.json")));
    }

    /// <summary>A checkpoint with one tensor dropped or written with another shape.</summary>
    private void WriteCustom(string? drop = null, (string Name, long[] Shape)? reshape = null)
    {
        var tensors = PresetWriter.TensorShapes(Tiny.ToConfig())
            .Where(t => t.Name != drop)
            .Select(t => reshape is { } r && r.Name == t.Name ? (t.Name, r.Shape) : t)
            .ToList();
        using (var w = SafetensorsWriter.Create(Weights, tensors.Select(t => new SafetensorsTensorInfo(t.Name, ScalarType.Float32, t.Item2)).ToList()))
        {
            foreach (var (name, shape) in tensors)
            {
                using var v = randn(shape);
                w.Write(name, v);
            }
            w.Complete();
        }
        File.WriteAllText(_tmp.Sub("config.json"), RandomCheckpoint.ConfigJson(Tiny));
    }

    private static void Truncate(string path, long length)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.Write);
        f.SetLength(length);
    }

    /// <summary>Replaces the JSON header (keeping the data section), fixing up the length prefix.</summary>
    private static void RewriteHeader(string path, Func<JsonObject, string> edit)
    {
        var bytes = File.ReadAllBytes(path);
        long len = BitConverter.ToInt64(bytes, 0);
        var header = JsonNode.Parse(bytes.AsSpan(8, (int)len))!.AsObject();
        var data = bytes.AsSpan(8 + (int)len).ToArray();
        var newHeader = Encoding.UTF8.GetBytes(edit(header));
        using var f = File.Create(path);
        f.Write(BitConverter.GetBytes((long)newHeader.Length));
        f.Write(newHeader);
        f.Write(data);
    }
}
