using Microsoft.Win32.SafeHandles;
using Swarm.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Swarm.Checkpoints;

/// <summary>
/// Reads a <c>.safetensors</c> file: an 8-byte little-endian header length, a JSON header, raw data.
/// The header is parsed and validated by the torch-free <see cref="SafetensorsHeader"/> when opened; tensors are
/// read one at a time, on demand, so a pipeline stage touches only its own bytes.
/// </summary>
internal sealed class SafetensorsFile : IDisposable
{
    /// <summary>Headers above this size are refused as corrupt (real ones are well under 1 MB).</summary>
    public const long MaxHeaderBytes = SafetensorsHeader.MaxHeaderBytes;

    private readonly SafeFileHandle _handle;
    private readonly long _dataStart;

    public string Path { get; }
    public IReadOnlyDictionary<string, SafetensorsEntry> Entries { get; }

    private SafetensorsFile(string path, SafeFileHandle handle, long dataStart, IReadOnlyDictionary<string, SafetensorsEntry> entries)
    {
        Path = path; _handle = handle; _dataStart = dataStart; Entries = entries;
    }

    public static SafetensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new CheckpointException($"safetensors file not found: {path}");
        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        try
        {
            long fileLength = RandomAccess.GetLength(handle);
            Span<byte> prefix = stackalloc byte[8];
            if (fileLength >= 8) RandomAccess.Read(handle, prefix, 0);
            long headerLen = SafetensorsHeader.ReadLength(prefix, fileLength, path);
            var headerBytes = new byte[headerLen];
            RandomAccess.Read(handle, headerBytes, 8);
            var header = SafetensorsHeader.Parse(headerBytes, fileLength, path);
            return new SafetensorsFile(path, handle, header.DataStart, header.Entries);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Bytes per element of a safetensors dtype (see <see cref="SafetensorsHeader.DtypeSize"/>).</summary>
    public static int DtypeSize(string dtype, string path = "", string name = "") => SafetensorsHeader.DtypeSize(dtype, path, name);

    public static ScalarType ToScalarType(string dtype) => dtype switch
    {
        "F32" => ScalarType.Float32,
        "F16" => ScalarType.Float16,
        "BF16" => ScalarType.BFloat16,
        "F64" => ScalarType.Float64,
        "I64" => ScalarType.Int64,
        "I32" => ScalarType.Int32,
        "I16" => ScalarType.Int16,
        "I8" => ScalarType.Int8,
        "U8" => ScalarType.Byte,
        "BOOL" => ScalarType.Bool,
        _ => throw new CheckpointException($"unsupported safetensors dtype {dtype}"),
    };

    public static string FromScalarType(ScalarType t) => t switch
    {
        ScalarType.Float32 => "F32",
        ScalarType.Float16 => "F16",
        ScalarType.BFloat16 => "BF16",
        ScalarType.Float64 => "F64",
        ScalarType.Int64 => "I64",
        ScalarType.Int32 => "I32",
        _ => throw new ArgumentException($"dtype {t} cannot be stored"),
    };

    /// <summary>Reads one tensor in its stored dtype. The caller owns (and disposes) the result.</summary>
    public Tensor Read(string name)
    {
        if (!Entries.TryGetValue(name, out var e)) throw new CheckpointException($"{Path}: tensor '{name}' not found");
        return Read(e, 0, e.Shape.Length == 0 ? 1 : e.Shape[0]);
    }

    /// <summary>Reads rows [start, start+count) along dim 0 — used by tensor-parallel shards.</summary>
    public Tensor Read(SafetensorsEntry e, long start, long count)
    {
        long rowElems = e.Shape.Length == 0 ? 1 : e.ElementCount / Math.Max(1, e.Shape[0]);
        int es = DtypeSize(e.Dtype);
        long[] shape = e.Shape.Length == 0 ? [] : [count, .. e.Shape[1..]];
        var t = torch.empty(shape, ToScalarType(e.Dtype));
        try
        {
            long offset = _dataStart + e.Begin + start * rowElems * es;
            long total = count * rowElems * es;
            // Tensor.bytes is a Span limited to int length: read big tensors in chunks via a view per chunk.
            if (total <= int.MaxValue) { ReadExactly(t.bytes, offset); }
            else
            {
                using var flat = t.view(-1);
                long chunkElems = (1L << 30) / es;
                for (long at = 0; at < count * rowElems; at += chunkElems)
                {
                    long n = Math.Min(chunkElems, count * rowElems - at);
                    using var part = flat.narrow(0, at, n);
                    ReadExactly(part.bytes, offset + at * es);
                }
            }
            return t;
        }
        catch { t.Dispose(); throw; }
    }

    /// <summary>Reads columns [start, start+count) of a 2-D tensor, row by row (only the needed bytes).</summary>
    public Tensor ReadColumns(SafetensorsEntry e, long start, long count)
    {
        if (e.Shape.Length != 2) throw new CheckpointException($"{Path}: tensor '{e.Name}' is not 2-D; cannot slice columns");
        long rows = e.Shape[0], cols = e.Shape[1];
        if (start < 0 || count < 0 || start + count > cols)
            throw new ArgumentOutOfRangeException(nameof(start), $"columns [{start}, {start + count}) outside [0, {cols})");
        int es = DtypeSize(e.Dtype);
        var t = torch.empty([rows, count], ToScalarType(e.Dtype));
        try
        {
            if (rows * count * es > int.MaxValue) throw new CheckpointException($"{Path}: column slice of '{e.Name}' too large");
            var dst = t.bytes;
            int rowBytes = (int)(count * es);
            for (long r = 0; r < rows; r++)
                ReadExactly(dst.Slice((int)(r * rowBytes), rowBytes), _dataStart + e.Begin + (r * cols + start) * es);
            return t;
        }
        catch { t.Dispose(); throw; }
    }

    private void ReadExactly(Span<byte> dst, long offset)
    {
        while (dst.Length > 0)
        {
            int n = RandomAccess.Read(_handle, dst, offset);
            if (n <= 0) throw new CheckpointException($"{Path}: unexpected end of file");
            dst = dst[n..]; offset += n;
        }
    }

    public void Dispose() => _handle.Dispose();
}
