using System.Text;
using Swarm.Checkpoints;
using Swarm.Model;
using Swarm.Weights;
using Xunit;

namespace Swarm.Tests.Weights;

/// <summary>The torch-free header parser shared by the engine's reader and the fetcher; the manifest's JSON form.</summary>
public sealed class SafetensorsHeaderTests
{
    private static (byte[] Json, long FileLength) Header(string json, long dataBytes)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(json);
        return (bytes, 8 + bytes.Length + dataBytes);
    }

    [Fact]
    public void Build_ThenParse_GivesBackOffsetsAlignedDataAndMetadata()
    {
        byte[] json = SafetensorsHeader.Build([("a", "F16", [3, 5]), ("b", "F32", [7]), ("s", "I64", [])],
            new Dictionary<string, string> { ["format"] = "pt" }, out long data);
        Assert.Equal(3 * 5 * 2 + 7 * 4 + 8, data);
        Assert.Equal(0, (8 + json.Length) % 8);
        var h = SafetensorsHeader.Parse(json, 8 + json.Length + data, "test");
        Assert.Equal(["a", "b", "s"], h.Entries.Keys);
        Assert.Equal((30L, 58L), (h.Entries["b"].Begin, h.Entries["b"].End));
        Assert.Equal("pt", h.Metadata["format"]);
        Assert.Equal(8 + json.Length, h.DataStart);
    }

    [Fact]
    public void Parse_OverlappingTensors_NamesBoth()
    {
        var (json, length) = Header("""{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"y":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""", 16);
        var e = Assert.Throws<CheckpointException>(() => SafetensorsHeader.Parse(json, length, "src"));
        Assert.Contains("'x'", e.Message);
        Assert.Contains("'y'", e.Message);
        Assert.Contains("overlap", e.Message);
    }

    [Fact]
    public void Parse_TensorBeyondTheFile_IsTruncation()
    {
        var (json, length) = Header("""{"x":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}""", 20);
        var e = Assert.Throws<CheckpointException>(() => SafetensorsHeader.Parse(json, length, "src"));
        Assert.Contains("src: truncated: tensor 'x' ends at byte 32", e.Message);
    }

    [Fact]
    public void Manifest_JsonRoundTrip_AndRejectsABadDigest()
    {
        var m = new TensorManifest("http://h/o/n/resolve/main/", new Dictionary<string, TensorDigest>
        {
            ["b"] = new(new string('a', 64), 10), ["a"] = new(new string('0', 64), 0),
        });
        var back = TensorManifest.Parse(m.ToJson(), "m.json");
        Assert.Equal(m.Source, back.Source);
        Assert.Equal(m.Tensors.OrderBy(kv => kv.Key), back.Tensors.OrderBy(kv => kv.Key));
        var e = Assert.Throws<WeightFetchException>(() => TensorManifest.Parse(m.ToJson().Replace(new string('a', 64), "xyz"), "m.json"));
        Assert.Contains("m.json", e.Message);
        Assert.Contains("'b'", e.Message);
    }
}
