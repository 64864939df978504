using Swarm.Checkpoints;
using Xunit;
using static TorchSharp.torch;

namespace Swarm.Tests.Presets;

public class SafetensorsWriterTests
{
    private static readonly SafetensorsTensorInfo[] Layout =
    [
        new("a", ScalarType.Float32, [3, 4]),
        new("b.bias", ScalarType.Float16, [5]),
        new("c", ScalarType.BFloat16, [4, 2]),
    ];

    [Fact]
    public void WrittenFile_ReadsBack_WithAlignedHeader()
    {
        using var dir = new TempDir();
        string path = dir.Sub("x.safetensors");
        using var a = arange(12, ScalarType.Float32).reshape(3, 4);
        using var b = arange(5, ScalarType.Float32).to(ScalarType.Float16);
        using var c = arange(8, ScalarType.Float32).reshape(4, 2).to(ScalarType.BFloat16);
        using (var w = SafetensorsWriter.Create(path, Layout, new Dictionary<string, string> { ["format"] = "pt" }))
        {
            w.Write("a", a);
            using var c0 = c.narrow(0, 0, 3);
            using var c1 = c.narrow(0, 3, 1);
            w.Write("b.bias", b);
            w.Append("c", c0);
            w.Append("c", c1);
            Assert.Equal(w.TotalBytes, w.BytesWritten);
            w.Complete();
        }
        var bytes = File.ReadAllBytes(path);
        long headerLen = BitConverter.ToInt64(bytes, 0);
        Assert.Equal(0, (8 + headerLen) % 8);
        Assert.Equal(8 + headerLen + 48 + 10 + 16, bytes.Length);
        Assert.StartsWith("{\"__metadata__\":{\"format\":\"pt\"}", System.Text.Encoding.UTF8.GetString(bytes, 8, (int)headerLen));

        using var f = SafetensorsFile.Open(path);
        Assert.Equal(["a", "b.bias", "c"], f.Entries.Keys.Order());
        using var ra = f.Read("a");
        using var rb = f.Read("b.bias");
        using var rc = f.Read("c");
        TensorAssert.Same(ra, a);
        TensorAssert.Same(rb, b);
        Assert.Equal(ScalarType.BFloat16, rc.dtype);
        TensorAssert.Same(rc, c);
        Assert.False(File.Exists(path + ".partial"));
    }

    [Fact]
    public void OutOfOrderOrWrongShape_ClearErrors()
    {
        using var dir = new TempDir();
        using var w = SafetensorsWriter.Create(dir.Sub("x.safetensors"), Layout);
        using var b = zeros(new long[] { 5 }, ScalarType.Float16);
        Assert.Contains("'a' is next", Assert.Throws<InvalidOperationException>(() => w.Write("b.bias", b)).Message);
        using var wrongShape = zeros(4, 3);
        Assert.Contains("declared [3, 4]", Assert.Throws<ArgumentException>(() => w.Write("a", wrongShape)).Message);
        using var wrongType = zeros(new long[] { 3, 4 }, ScalarType.Float64);
        Assert.Contains("dtype", Assert.Throws<ArgumentException>(() => w.Write("a", wrongType)).Message);
        using var tooMany = zeros(4, 4);
        Assert.Contains("more than its declared", Assert.Throws<ArgumentException>(() => w.Append("a", tooMany)).Message);
        using var part = zeros(2, 4);
        w.Append("a", part);
        Assert.Contains("incomplete", Assert.Throws<InvalidOperationException>(() => w.Write("b.bias", b)).Message);
        Assert.Contains("'a' is not complete", Assert.Throws<InvalidOperationException>(() => w.Complete()).Message);
    }

    [Fact]
    public void DisposeWithoutComplete_LeavesNoFile()
    {
        using var dir = new TempDir();
        string path = dir.Sub("x.safetensors");
        using (var w = SafetensorsWriter.Create(path, Layout))
        {
            using var a = zeros(3, 4);
            w.Write("a", a);
        }
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void DuplicateNames_Rejected()
    {
        using var dir = new TempDir();
        SafetensorsTensorInfo[] twice = [new("a", ScalarType.Float32, [1]), new("a", ScalarType.Float32, [1])];
        Assert.Contains("declared twice", Assert.Throws<ArgumentException>(() => SafetensorsWriter.Create(dir.Sub("x.safetensors"), twice)).Message);
    }
}
