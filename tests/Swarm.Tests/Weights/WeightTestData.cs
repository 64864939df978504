using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using Swarm.Checkpoints;
using Swarm.Model;
using Swarm.Weights;
using Xunit;
using static TorchSharp.torch;

namespace Swarm.Tests.Weights;

/// <summary>What a test needs to know about a local fixture checkpoint to judge a pull from it.</summary>
internal static class WeightTestData
{
    /// <summary>A tensor of a local checkpoint: its file and absolute byte range.</summary>
    public sealed record LocalTensor(string Name, string File, long Offset, long Length);

    /// <summary>Every tensor of a local HF folder, with its absolute offset in its file.</summary>
    public static Dictionary<string, LocalTensor> Tensors(string dir)
    {
        var result = new Dictionary<string, LocalTensor>();
        foreach (var path in Directory.GetFiles(dir, "*.safetensors"))
        {
            var header = Header(File.ReadAllBytes(path), path);
            foreach (var e in header.Entries.Values)
                result[e.Name] = new LocalTensor(e.Name, Path.GetFileName(path), header.DataStart + e.Begin, e.ByteCount);
        }
        return result;
    }

    /// <summary>Bytes a pull of these tensors must read besides them: config, index, and the headers of their files.</summary>
    public static long MetadataBytes(string dir, IEnumerable<LocalTensor> tensors)
    {
        long bytes = new FileInfo(Path.Combine(dir, "config.json")).Length;
        string index = Path.Combine(dir, RemoteCheckpoint.IndexFile);
        if (File.Exists(index)) bytes += new FileInfo(index).Length;
        foreach (var file in tensors.Select(t => t.File).Distinct())
            bytes += Header(File.ReadAllBytes(Path.Combine(dir, file)), file).DataStart;
        return bytes;
    }

    /// <summary>The bytes of one tensor in a local file.</summary>
    public static byte[] TensorBytes(string dir, LocalTensor t) =>
        File.ReadAllBytes(Path.Combine(dir, t.File)).AsSpan((int)t.Offset, (int)t.Length).ToArray();

    /// <summary>A copy of a safetensors file whose JSON header <paramref name="edit"/> changed; the data section is kept.</summary>
    public static byte[] RewriteHeader(byte[] file, Action<JsonObject> edit)
    {
        long length = BinaryPrimitives.ReadInt64LittleEndian(file);
        var header = JsonNode.Parse(file.AsSpan(8, (int)length))!.AsObject();
        edit(header);
        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        var result = new byte[8 + json.Length + (file.Length - 8 - length)];
        BinaryPrimitives.WriteInt64LittleEndian(result, json.Length);
        json.CopyTo(result, 8);
        file.AsSpan(8 + (int)length).CopyTo(result.AsSpan(8 + json.Length));
        return result;
    }

    private static SafetensorsHeader Header(byte[] file, string source) =>
        SafetensorsHeader.Parse(file.AsSpan(8, (int)SafetensorsHeader.ReadLength(file, file.Length, source)), file.Length, source);

    /// <summary>Asserts that stage [a, b) computes the same outputs, bit for bit, from both checkpoints.</summary>
    public static void AssertSameStageOutput(string fullDir, string pulledDir, int a, int b)
    {
        using var full = Checkpoint.Open(fullDir);
        using var pulled = Checkpoint.Open(pulledDir);
        using var expectedStage = StageModel.Load(full, a, b);
        using var actualStage = StageModel.Load(pulled, a, b);
        using var generator = new Generator(7);
        using var input = a == 0 ? tensor(new long[] { 1, 5, 9, 42, 7 }) : randn(5, full.Config.HiddenSize, generator: generator);
        using var expected = Run(expectedStage, input);
        using var actual = Run(actualStage, input);
        Presets.TensorAssert.Same(expected, actual);
    }

    private static Tensor Run(StageModel stage, Tensor input)
    {
        using var pool = stage.NewBlockPool(4, 16);
        var sequence = pool.NewSequence();
        Assert.True(pool.TryReserve(sequence, (int)input.shape[0]));
        return stage.ForwardBatch([new BatchItem(input, sequence)], pool, stage.Start, stage.End)[0]!;
    }

    /// <summary>Reports synchronously on the reporting thread (unlike <see cref="Progress{T}"/>).</summary>
    public sealed class SyncProgress(Action<(long done, long total)> report) : IProgress<(long done, long total)>
    {
        public void Report((long done, long total) value) => report(value);
    }
}
