using System.Security.Cryptography;

namespace Swarm.Transport.Nat;

/// <summary>What a <see cref="NatSignal"/> datagram is for.</summary>
internal enum NatSignalKind : byte
{
    /// <summary>Coordinator (from a fresh socket) → node: "can you hear me?" — answered with <see cref="ProbeAck"/>.</summary>
    Probe = 1,
    /// <summary>Node → the probe's sender: the probe arrived, so the node is reachable from anywhere.</summary>
    ProbeAck = 2,
    /// <summary>Node → a peer (or a relay): opens the node's NAT toward it; the receiver ignores it.</summary>
    Punch = 3,
}

/// <summary>
/// The NAT traversal datagrams, sent as LiteNetLib unconnected messages outside any connection:
/// <c>"SWNT" | kind | 16-byte token</c> (21 bytes). They carry nothing secret and grant nothing: a probe is answered
/// with an acknowledgement of the same size to its sender (no amplification), a punch is dropped on arrival.
/// </summary>
internal static class NatSignal
{
    private static ReadOnlySpan<byte> Magic => "SWNT"u8;

    /// <summary>Length of a signal.</summary>
    public const int Length = 4 + 1 + TokenLength;

    /// <summary>Length of the random token (a probe's acknowledgement echoes it).</summary>
    public const int TokenLength = 16;

    /// <summary>A signal of <paramref name="kind"/> carrying <paramref name="token"/>.</summary>
    public static byte[] Create(NatSignalKind kind, ReadOnlySpan<byte> token)
    {
        if (token.Length != TokenLength) throw new ArgumentException($"a token is {TokenLength} bytes", nameof(token));
        var data = new byte[Length];
        Magic.CopyTo(data);
        data[4] = (byte)kind;
        token.CopyTo(data.AsSpan(5));
        return data;
    }

    /// <summary>A fresh random token.</summary>
    public static byte[] NewToken() => RandomNumberGenerator.GetBytes(TokenLength);

    /// <summary>Reads a signal; false for anything else (which the caller drops).</summary>
    public static bool TryRead(ReadOnlySpan<byte> data, out NatSignalKind kind, out ReadOnlySpan<byte> token)
    {
        kind = default;
        token = default;
        if (data.Length != Length || !data[..4].SequenceEqual(Magic)) return false;
        kind = (NatSignalKind)data[4];
        if (kind is not (NatSignalKind.Probe or NatSignalKind.ProbeAck or NatSignalKind.Punch)) return false;
        token = data[5..];
        return true;
    }
}
