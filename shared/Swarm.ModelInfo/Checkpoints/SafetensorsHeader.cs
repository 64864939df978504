using System.Buffers.Binary;
using System.Text.Json;
using System.Text.Json.Nodes;
using Swarm.Model;

namespace Swarm.Checkpoints;

/// <summary>One tensor's entry in a safetensors header; offsets are relative to the start of the data section.</summary>
public sealed record SafetensorsEntry(string Name, string Dtype, long[] Shape, long Begin, long End)
{
    /// <summary>Number of elements (1 for a scalar).</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>Bytes of the tensor's data.</summary>
    public long ByteCount => End - Begin;
}

/// <summary>
/// The header of a <c>.safetensors</c> file — an 8-byte little-endian length, then a JSON object that names every
/// tensor's dtype, shape and data offsets — parsed and validated without reading any tensor data, so it works the same
/// on a local file and on the first bytes of a remote one fetched by HTTP range. Torch-free: the engine's reader and
/// the weight fetcher share it.
/// </summary>
public sealed class SafetensorsHeader
{
    /// <summary>Headers above this size are refused as corrupt (real ones are well under 1 MB).</summary>
    public const long MaxHeaderBytes = 100L << 20;

    /// <summary>Tensors by name, in the order the header lists them.</summary>
    public IReadOnlyDictionary<string, SafetensorsEntry> Entries { get; }

    /// <summary>The <c>__metadata__</c> strings (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>File offset of the data section: 8 + the header's length.</summary>
    public long DataStart { get; }

    private SafetensorsHeader(Dictionary<string, SafetensorsEntry> entries, Dictionary<string, string> metadata, long dataStart)
    {
        Entries = entries; Metadata = metadata; DataStart = dataStart;
    }

    /// <summary>Reads and checks the declared header length from a file's first 8 bytes.</summary>
    /// <param name="prefix">The first 8 bytes of the file.</param>
    /// <param name="fileLength">Length of the whole file.</param>
    /// <param name="source">Names the file in error messages (a path or a URL).</param>
    /// <exception cref="CheckpointException">The file is too short, or the length is absurd or beyond the file.</exception>
    public static long ReadLength(ReadOnlySpan<byte> prefix, long fileLength, string source)
    {
        if (fileLength < 8 || prefix.Length < 8)
            throw new CheckpointException($"{source}: truncated safetensors file ({fileLength} bytes, no header)");
        long headerLen = BinaryPrimitives.ReadInt64LittleEndian(prefix);
        if (headerLen <= 0 || headerLen > MaxHeaderBytes)
            throw new CheckpointException($"{source}: corrupt safetensors header (declared header length {headerLen}, file length {fileLength})");
        if (headerLen > fileLength - 8)
            throw new CheckpointException($"{source}: truncated safetensors file: the header declares {headerLen} bytes but only {fileLength - 8} follow");
        return headerLen;
    }

    /// <summary>
    /// Parses the JSON header and checks every entry: a known dtype, data offsets that match shape × dtype size, lie inside
    /// the file's data section and do not overlap another tensor's.
    /// </summary>
    /// <param name="json">The header bytes (length as returned by <see cref="ReadLength"/>).</param>
    /// <param name="fileLength">Length of the whole file (bounds the data section).</param>
    /// <param name="source">Names the file in error messages.</param>
    /// <exception cref="CheckpointException">Anything is wrong; the message names the file and the tensor.</exception>
    public static SafetensorsHeader Parse(ReadOnlySpan<byte> json, long fileLength, string source)
    {
        JsonObject header;
        try { header = JsonNode.Parse(json) as JsonObject ?? throw new CheckpointException($"{source}: corrupt safetensors header (not a JSON object)"); }
        catch (JsonException e) { throw new CheckpointException($"{source}: corrupt safetensors header ({e.Message})"); }
        long dataStart = 8 + json.Length, dataLength = fileLength - dataStart;
        var entries = new Dictionary<string, SafetensorsEntry>();
        var metadata = new Dictionary<string, string>();
        foreach (var (name, node) in header)
        {
            if (name == "__metadata__")
            {
                if (node is JsonObject meta)
                    foreach (var (k, v) in meta)
                        if (v is JsonValue s && s.TryGetValue(out string? text)) metadata[k] = text;
                continue;
            }
            SafetensorsEntry e;
            try
            {
                string dtype = (string)node!["dtype"]!;
                long[] shape = node["shape"]!.AsArray().Select(x => (long)x!).ToArray();
                var offs = node["data_offsets"]!.AsArray();
                e = new SafetensorsEntry(name, dtype, shape, (long)offs[0]!, (long)offs[1]!);
            }
            catch (Exception ex) when (ex is NullReferenceException or InvalidOperationException or FormatException or ArgumentException)
            {
                throw new CheckpointException($"{source}: corrupt safetensors header entry '{name}'");
            }
            long expected = e.ElementCount * DtypeSize(e.Dtype, source, name);
            if (e.Begin < 0 || e.End < e.Begin || e.End - e.Begin != expected)
                throw new CheckpointException($"{source}: tensor '{name}' has data_offsets [{e.Begin}, {e.End}) that do not match its shape [{string.Join(", ", e.Shape)}] and dtype {e.Dtype}");
            if (e.End > dataLength)
                throw new CheckpointException($"{source}: truncated: tensor '{name}' ends at byte {e.End} of the data section but the file holds only {dataLength}");
            entries[name] = e;
        }
        CheckNoOverlap(entries.Values, source);
        return new SafetensorsHeader(entries, metadata, dataStart);
    }

    private static void CheckNoOverlap(IEnumerable<SafetensorsEntry> entries, string source)
    {
        SafetensorsEntry? previous = null;
        foreach (var e in entries.Where(e => e.End > e.Begin).OrderBy(e => e.Begin))
        {
            if (previous is not null && e.Begin < previous.End)
                throw new CheckpointException($"{source}: corrupt safetensors header: tensors '{previous.Name}' [{previous.Begin}, {previous.End}) and '{e.Name}' [{e.Begin}, {e.End}) overlap");
            previous = e;
        }
    }

    /// <summary>Bytes per element of a safetensors dtype.</summary>
    /// <exception cref="CheckpointException">A dtype Swarm does not read (the message names file and tensor).</exception>
    public static int DtypeSize(string dtype, string source = "", string name = "") => dtype switch
    {
        "F32" or "I32" => 4,
        "F16" or "BF16" or "I16" => 2,
        "F64" or "I64" => 8,
        "U8" or "I8" or "BOOL" => 1,
        _ => throw new CheckpointException($"{source}: tensor '{name}' has unsupported dtype {dtype}"),
    };

    /// <summary>
    /// Builds a header for tensors laid out back to back in the given order: the 8-byte length prefix is not included;
    /// the JSON is space-padded so the data section starts on an 8-byte boundary, as the HF writer does.
    /// </summary>
    /// <param name="tensors">Name, dtype and shape of every tensor, in data order.</param>
    /// <param name="metadata">Optional <c>__metadata__</c> strings (HF writes <c>{"format":"pt"}</c>).</param>
    /// <param name="dataBytes">Total bytes of the data section the header describes.</param>
    public static byte[] Build(IReadOnlyList<(string Name, string Dtype, long[] Shape)> tensors,
        IReadOnlyDictionary<string, string>? metadata, out long dataBytes)
    {
        var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata) json.WriteString(k, v);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, dtype, shape) in tensors)
            {
                json.WriteStartObject(name);
                json.WriteString("dtype", dtype);
                json.WriteStartArray("shape");
                foreach (long d in shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset += shape.Aggregate(1L, (a, b) => a * b) * DtypeSize(dtype, "", name));
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndObject();
            dataBytes = offset;
        }
        int pad = (int)((8 - (8 + buffer.Length) % 8) % 8);
        for (int i = 0; i < pad; i++) buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }
}
