using System.Buffers.Binary;

namespace Swarm.Transport;

/// <summary>
/// The payload of LiteNetLib's connection request: <c>"SWRM" | int32 LE protocol version | mode byte</c> (9 bytes).
/// It carries no credential of any kind — not the swarm secret, not a hash of it: peers authenticate afterwards, in
/// the Noise handshake over the connection. Mode 1 means "a Noise handshake follows"; mode 0 (plaintext) exists only
/// for the benchmark that measures what encryption costs and is refused by every transport that encrypts.
/// </summary>
internal static class ConnectRequest
{
    private static ReadOnlySpan<byte> Magic => "SWRM"u8;

    /// <summary>Length of a request.</summary>
    public const int Length = 4 + 4 + 1;

    /// <summary>Length of the request of releases before the secure channel ("SWRM" | version | 32-byte HMAC key).</summary>
    private const int BearerKeyLength = 4 + 4 + 32;

    private const byte ModePlaintext = 0;
    private const byte ModeNoise = 1;

    /// <summary>The request a transport sends.</summary>
    public static byte[] Build(int protocolVersion, bool encrypted)
    {
        var data = new byte[Length];
        Magic.CopyTo(data);
        BinaryPrimitives.WriteInt32LittleEndian(data.AsSpan(4), protocolVersion);
        data[8] = encrypted ? ModeNoise : ModePlaintext;
        return data;
    }

    /// <summary>Checks a request against our protocol version and mode.</summary>
    /// <returns>Null when acceptable, else the reason for the refusal (sent back to the peer and logged).</returns>
    public static string? Check(ReadOnlySpan<byte> request, int protocolVersion, bool encrypted)
    {
        if (request.Length < 8 || !request[..4].SequenceEqual(Magic))
            return "malformed connection request (not a Swarm peer?)";
        int version = BinaryPrimitives.ReadInt32LittleEndian(request[4..]);
        if (version != protocolVersion)
            return $"protocol version {version} is not supported (this peer speaks {protocolVersion})";
        if (request.Length == BearerKeyLength)
            return "this peer runs a release that sends its swarm key in the clear; upgrade it (peers now authenticate with a Noise handshake)";
        if (request.Length != Length || request[8] is not (ModePlaintext or ModeNoise))
            return "malformed connection request (not a Swarm peer?)";
        bool theirs = request[8] == ModeNoise;
        if (theirs != encrypted)
            return encrypted ? "this peer requires an encrypted channel" : "this peer runs without encryption (a benchmark transport)";
        return null;
    }
}
