using MessagePack;

namespace Swarm.Protocol;

/// <summary>
/// Node → node: send bytes [<see cref="Offset"/>, <see cref="Offset"/> + <see cref="Length"/>) of the tensor whose
/// bytes hash to <see cref="Sha256"/> (a digest of the swarm's manifest). Answered with a <see cref="TensorChunk"/>, or
/// an <see cref="ErrorReply"/>: <see cref="ErrorCode.RangeNotLoaded"/> (the peer does not hold it),
/// <see cref="ErrorCode.Unauthorized"/> (the peer does not share: <c>--no-share</c>) or
/// <see cref="ErrorCode.Overloaded"/> (its upload rate limit is used up: ask elsewhere or later).
/// A tensor larger than one chunk is fetched with several requests.
/// </summary>
/// <remarks>Keys 0–2, append-only.</remarks>
[MessagePackObject]
public sealed record TensorRequest : IMessage
{
    /// <summary>Lower-case hex SHA-256 of the whole tensor's bytes.</summary>
    [Key(0)] public string Sha256 { get; init; } = "";

    /// <summary>First byte wanted, relative to the tensor's first byte.</summary>
    [Key(1)] public long Offset { get; init; }

    /// <summary>Bytes wanted, at most <see cref="ProtocolInfo.MaxTensorChunkBytes"/>.</summary>
    [Key(2)] public int Length { get; init; }
}

/// <summary>
/// Node → node, reply to <see cref="TensorRequest"/>: bytes of a tensor, starting at <see cref="Offset"/>. Fewer bytes
/// than asked only at the tensor's end. Never trusted: the receiver checks the whole tensor against the manifest.
/// </summary>
/// <remarks>Keys 0–3, append-only.</remarks>
[MessagePackObject]
public sealed record TensorChunk : IMessage
{
    /// <summary>The digest asked for.</summary>
    [Key(0)] public string Sha256 { get; init; } = "";

    /// <summary>Where <see cref="Data"/> starts, relative to the tensor's first byte.</summary>
    [Key(1)] public long Offset { get; init; }

    /// <summary>Bytes of the whole tensor as the sender holds it.</summary>
    [Key(2)] public long TotalLength { get; init; }

    /// <summary>The bytes, at most <see cref="ProtocolInfo.MaxTensorChunkBytes"/>.</summary>
    [Key(3)] public byte[] Data { get; init; } = [];
}
