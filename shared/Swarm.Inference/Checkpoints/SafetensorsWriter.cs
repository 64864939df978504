using TorchSharp;
using static TorchSharp.torch;

namespace Swarm.Checkpoints;

/// <summary>One tensor declared up front to a <see cref="SafetensorsWriter"/>.</summary>
internal sealed record SafetensorsTensorInfo(string Name, ScalarType DType, long[] Shape)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
    public long ByteCount => ElementCount * SafetensorsFile.DtypeSize(SafetensorsFile.FromScalarType(DType));
}

/// <summary>
/// Writes a <c>.safetensors</c> file without holding it in memory: every tensor's name, dtype and shape
/// is declared up front, so the header (8-byte length, JSON, space-padded to an 8-byte boundary as the
/// HF writer does) goes first; then the tensors' bytes are streamed in declaration order, whole or in
/// row chunks. The file is written as <c>PATH.partial</c> and renamed by <see cref="Complete"/>, so a
/// crash never leaves a truncated file under the real name.
/// </summary>
internal sealed class SafetensorsWriter : IDisposable
{
    private readonly FileStream _stream;
    private readonly string _partialPath;
    private readonly IReadOnlyList<SafetensorsTensorInfo> _tensors;
    private readonly long _dataStart;
    private int _current;        // index of the tensor being written
    private long _currentBytes;  // bytes of it written so far
    private bool _completed;

    /// <summary>Final path of the file (it exists only after <see cref="Complete"/>).</summary>
    public string Path { get; }

    /// <summary>Bytes of tensor data written so far.</summary>
    public long BytesWritten { get; private set; }

    /// <summary>Bytes of tensor data the file will hold.</summary>
    public long TotalBytes { get; }

    private SafetensorsWriter(string path, IReadOnlyList<SafetensorsTensorInfo> tensors, FileStream stream, string partialPath, long dataStart, long total)
    {
        Path = path; _tensors = tensors; _stream = stream; _partialPath = partialPath; _dataStart = dataStart; TotalBytes = total;
    }

    /// <summary>Creates the file and writes its header.</summary>
    /// <param name="path">Target file; replaced if it exists, once <see cref="Complete"/> succeeds.</param>
    /// <param name="tensors">Every tensor, in the order their data will be written.</param>
    /// <param name="metadata">Optional <c>__metadata__</c> strings (HF writes <c>{"format":"pt"}</c>).</param>
    public static SafetensorsWriter Create(string path, IReadOnlyList<SafetensorsTensorInfo> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var names = new HashSet<string>();
        foreach (var t in tensors)
        {
            if (string.IsNullOrEmpty(t.Name) || t.Name == "__metadata__")
                throw new ArgumentException($"invalid tensor name '{t.Name}'", nameof(tensors));
            if (!names.Add(t.Name)) throw new ArgumentException($"tensor '{t.Name}' is declared twice", nameof(tensors));
            if (t.Shape.Any(d => d < 0)) throw new ArgumentException($"tensor '{t.Name}' has a negative dimension", nameof(tensors));
            _ = SafetensorsFile.FromScalarType(t.DType); // throws for dtypes safetensors cannot hold
        }

        byte[] header = BuildHeader(tensors, metadata, out long total);
        string partial = path + ".partial";
        var stream = new FileStream(partial, new FileStreamOptions
        {
            Mode = FileMode.Create, Access = FileAccess.Write, Share = FileShare.None, BufferSize = 1 << 20,
        });
        try
        {
            Span<byte> len = stackalloc byte[8];
            BitConverter.TryWriteBytes(len, (long)header.Length);
            stream.Write(len);
            stream.Write(header);
            return new SafetensorsWriter(path, [.. tensors], stream, partial, 8 + header.Length, total);
        }
        catch
        {
            stream.Dispose();
            File.Delete(partial);
            throw;
        }
    }

    private static byte[] BuildHeader(IReadOnlyList<SafetensorsTensorInfo> tensors, IReadOnlyDictionary<string, string>? metadata, out long total) =>
        SafetensorsHeader.Build([.. tensors.Select(t => (t.Name, SafetensorsFile.FromScalarType(t.DType), t.Shape))], metadata, out total);

    /// <summary>Writes a whole tensor; it must be the next one declared and match its dtype and shape.</summary>
    public void Write(string name, Tensor value)
    {
        var info = Expect(name, value);
        if (_currentBytes != 0)
            throw new InvalidOperationException($"tensor '{name}' was already partly written with Append: append the rest");
        if (!value.shape.SequenceEqual(info.Shape))
            throw new ArgumentException($"tensor '{name}' has shape [{string.Join(", ", value.shape)}], declared [{string.Join(", ", info.Shape)}]");
        WriteBytes(value);
    }

    /// <summary>
    /// Appends the next rows (slices along dim 0) of the current tensor, so a large tensor can be
    /// produced chunk by chunk. The chunk's trailing dims and dtype must match the declaration.
    /// </summary>
    public void Append(string name, Tensor rows)
    {
        var info = Expect(name, rows);
        if (info.Shape.Length == 0) throw new ArgumentException($"tensor '{name}' is a scalar: use Write");
        if (rows.dim() != info.Shape.Length || !rows.shape.Skip(1).SequenceEqual(info.Shape.Skip(1)))
            throw new ArgumentException($"chunk of '{name}' has shape [{string.Join(", ", rows.shape)}], expected [N, {string.Join(", ", info.Shape.Skip(1))}]");
        WriteBytes(rows);
    }

    private SafetensorsTensorInfo Expect(string name, Tensor value)
    {
        ObjectDisposedException.ThrowIf(_completed, this);
        ArgumentNullException.ThrowIfNull(value);
        if (_current >= _tensors.Count)
            throw new InvalidOperationException($"tensor '{name}' written after every declared tensor was complete");
        var info = _tensors[_current];
        if (info.Name != name)
        {
            string state = _currentBytes == 0 ? "is next" : $"is incomplete ({_currentBytes} of {info.ByteCount} bytes)";
            throw new InvalidOperationException($"tensor '{name}' written out of order: '{info.Name}' {state}");
        }
        if (value.dtype != info.DType)
            throw new ArgumentException($"tensor '{name}' has dtype {value.dtype}, declared {info.DType}");
        if (value.device_type != DeviceType.CPU)
            throw new ArgumentException($"tensor '{name}' must be on the CPU to be written, it is on {value.device}");
        return info;
    }

    private void WriteBytes(Tensor value)
    {
        var info = _tensors[_current];
        long bytes = value.NumberOfElements * value.ElementSize;
        if (_currentBytes + bytes > info.ByteCount)
            throw new ArgumentException($"tensor '{info.Name}': {_currentBytes + bytes} bytes written, more than its declared {info.ByteCount}");
        using var c = value.contiguous();
        if (bytes <= int.MaxValue) { _stream.Write(c.bytes); }
        else
        {
            // Tensor.bytes is an int-sized span: write huge tensors through 1 GB views.
            using var flat = c.view(-1);
            long step = (1L << 30) / value.ElementSize;
            for (long at = 0; at < flat.shape[0]; at += step)
            {
                using var part = flat.narrow(0, at, Math.Min(step, flat.shape[0] - at));
                _stream.Write(part.bytes);
            }
        }
        _currentBytes += bytes;
        BytesWritten += bytes;
        if (_currentBytes == info.ByteCount) { _current++; _currentBytes = 0; }
    }

    /// <summary>Checks that every declared tensor was written in full, flushes, and moves the file into place.</summary>
    public void Complete()
    {
        ObjectDisposedException.ThrowIf(_completed, this);
        if (_current < _tensors.Count)
            throw new InvalidOperationException($"{Path}: only {BytesWritten} of {TotalBytes} data bytes written; '{_tensors[_current].Name}' is not complete");
        if (_stream.Position != _dataStart + TotalBytes)
            throw new InvalidOperationException($"{Path}: file position {_stream.Position} does not match the header ({_dataStart + TotalBytes})");
        _stream.Flush(flushToDisk: false);
        _stream.Dispose();
        File.Move(_partialPath, Path, overwrite: true);
        _completed = true;
    }

    /// <summary>Closes the file; if <see cref="Complete"/> was not reached the partial file is deleted.</summary>
    public void Dispose()
    {
        if (_completed) return;
        _completed = true;
        _stream.Dispose();
        try { File.Delete(_partialPath); } catch (IOException) { }
    }
}
