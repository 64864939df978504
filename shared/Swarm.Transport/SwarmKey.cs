using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Swarm.Transport;

/// <summary>
/// The connect-time credential: a key derived from the swarm secret, sent with the protocol version in
/// LiteNetLib's connection request. Format: "SWRM" | int32 LE protocol version | 32-byte HMAC-SHA256(secret, "swarm/1").
/// </summary>
/// <remarks>
/// The key is a bearer token: anyone who can sniff a connection request can replay it. It keeps strangers out
/// of a swarm; it does not encrypt or authenticate individual packets.
/// </remarks>
public static class SwarmKey
{
    private static ReadOnlySpan<byte> Magic => "SWRM"u8;

    /// <summary>Length of a connection request payload.</summary>
    public const int RequestLength = 4 + 4 + 32;

    /// <summary>HMAC-SHA256(secret, "swarm/1"); an empty secret for null.</summary>
    public static byte[] Derive(string? secret) =>
        HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret ?? ""), "swarm/1"u8);

    /// <summary>The key as lowercase hex (for logs of fingerprints; never log it whole).</summary>
    public static string ToHex(byte[] key) => Convert.ToHexStringLower(key);

    /// <summary>Builds the connection request payload.</summary>
    public static byte[] BuildRequest(byte[] key, int protocolVersion)
    {
        var data = new byte[RequestLength];
        Magic.CopyTo(data);
        BinaryPrimitives.WriteInt32LittleEndian(data.AsSpan(4), protocolVersion);
        key.AsSpan().CopyTo(data.AsSpan(8));
        return data;
    }

    /// <summary>Checks a connection request payload against our key and version.</summary>
    /// <returns>Null when accepted, else the reason for the refusal (sent back to the peer and logged).</returns>
    public static string? Check(ReadOnlySpan<byte> request, byte[] key, int protocolVersion)
    {
        if (request.Length != RequestLength || !request[..4].SequenceEqual(Magic))
            return "malformed connection request (not a Swarm peer?)";
        int version = BinaryPrimitives.ReadInt32LittleEndian(request[4..]);
        if (version != protocolVersion)
            return $"protocol version {version} is not supported (this peer speaks {protocolVersion})";
        if (!CryptographicOperations.FixedTimeEquals(request[8..], key))
            return "wrong swarm key (the swarm secrets differ)";
        return null;
    }
}
