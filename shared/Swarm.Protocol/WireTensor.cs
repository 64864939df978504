using System.Buffers.Binary;
using MessagePack;

namespace Swarm.Protocol;

/// <summary>Element type of a <see cref="WireTensor"/>. Wire values: append only.</summary>
public enum WireDType : byte
{
    /// <summary>IEEE 754 binary32.</summary>
    F32 = 0,
    /// <summary>IEEE 754 binary16.</summary>
    F16 = 1,
    /// <summary>bfloat16 (upper half of a binary32).</summary>
    BF16 = 2,
    /// <summary>Signed 64-bit integer (token ids).</summary>
    I64 = 3,
}

/// <summary>
/// A dense tensor on the wire: dtype, shape and the raw little-endian bytes of its elements in row-major
/// (C-contiguous) order. The inference assembly converts to and from torch tensors (<c>WireTensorConversion</c>).
/// </summary>
/// <remarks>Keys 0–2, append-only. Check <see cref="Validate"/> before trusting a received instance (the codec does).</remarks>
[MessagePackObject]
public sealed record WireTensor
{
    /// <summary>A zero-element F32 tensor of shape [0].</summary>
    public static readonly WireTensor Empty = new() { DType = WireDType.F32, Shape = [0], Data = ReadOnlyMemory<byte>.Empty };

    /// <summary>Element type.</summary>
    [Key(0)] public WireDType DType { get; init; }

    /// <summary>Dimensions, outermost first; every dimension ≥ 0.</summary>
    [Key(1)] public long[] Shape { get; init; } = [];

    /// <summary>Element bytes, little-endian, row-major; length = product(Shape) · element size.</summary>
    [Key(2)] public ReadOnlyMemory<byte> Data { get; init; }

    /// <summary>Number of elements (product of <see cref="Shape"/>).</summary>
    [IgnoreMember]
    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (var d in Shape) n *= d;
            return n;
        }
    }

    /// <summary>Bytes per element of <paramref name="dtype"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Unknown dtype.</exception>
    public static int ElementSize(WireDType dtype) => dtype switch
    {
        WireDType.F32 => 4,
        WireDType.F16 => 2,
        WireDType.BF16 => 2,
        WireDType.I64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown wire dtype"),
    };

    /// <summary>Checks dtype, rank, dimensions and that the byte length matches the shape.</summary>
    /// <returns>Null when consistent, else a description of the first problem.</returns>
    public string? Validate()
    {
        if (!Enum.IsDefined(DType)) return $"tensor: unknown dtype {(int)DType}";
        if (Shape is null) return "tensor: shape is missing";
        if (Shape.Length > ProtocolInfo.MaxTensorRank) return $"tensor: rank {Shape.Length} exceeds {ProtocolInfo.MaxTensorRank}";
        long bytes = ElementSize(DType);
        foreach (var d in Shape)
        {
            if (d < 0) return $"tensor: negative dimension {d} in shape [{string.Join(',', Shape)}]";
            if (d != 0 && bytes > long.MaxValue / d) return $"tensor: shape [{string.Join(',', Shape)}] overflows";
            bytes *= d;
        }
        if (bytes != Data.Length)
            return $"tensor: shape [{string.Join(',', Shape)}] of {DType} needs {bytes} bytes, got {Data.Length}";
        return null;
    }

    /// <summary>Creates an I64 tensor of shape [1, ids.Length] from token ids (the first stage's input).</summary>
    public static WireTensor FromTokenIds(ReadOnlySpan<long> ids)
    {
        var data = new byte[ids.Length * 8];
        for (int i = 0; i < ids.Length; i++) BinaryPrimitives.WriteInt64LittleEndian(data.AsSpan(i * 8), ids[i]);
        return new WireTensor { DType = WireDType.I64, Shape = [1, ids.Length], Data = data };
    }

    /// <summary>
    /// For an <see cref="WireDType.I64"/> tensor of token ids: the first id outside [0, <paramref name="vocabSize"/>),
    /// or null when every id is inside. Reads the wire bytes directly, so a receiver can reject a bad step before any
    /// tensor work (and without a device round trip).
    /// </summary>
    /// <exception cref="InvalidOperationException">The tensor is not <see cref="WireDType.I64"/>.</exception>
    public long? FirstTokenIdOutside(long vocabSize)
    {
        if (DType != WireDType.I64) throw new InvalidOperationException($"token ids travel as I64, this tensor is {DType}");
        var bytes = Data.Span;
        for (int i = 0; i + 8 <= bytes.Length; i += 8)
        {
            long id = BinaryPrimitives.ReadInt64LittleEndian(bytes[i..]);
            if (id < 0 || id >= vocabSize) return id;
        }
        return null;
    }

    /// <summary>Throws on a big-endian host: wire bytes are little-endian.</summary>
    public static void EnsureLittleEndian()
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("wire tensors are little-endian; big-endian hosts are not supported");
    }
}
