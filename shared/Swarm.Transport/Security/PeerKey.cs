using System.Security.Cryptography;

namespace Swarm.Transport.Security;

/// <summary>
/// Text forms of a peer's 32-byte X25519 public key: the full key as 64 lowercase hex digits (for pinning, e.g.
/// <c>--coordinator-key</c>) and a short fingerprint (for logs, status pages and traces).
/// </summary>
public static class PeerKey
{
    /// <summary>Length of an X25519 public key in bytes.</summary>
    public const int Length = 32;

    /// <summary>The prefix of every fingerprint.</summary>
    public const string FingerprintPrefix = "swarm:";

    private const string Base32Alphabet = "abcdefghijklmnopqrstuvwxyz234567";

    /// <summary>
    /// <c>swarm:</c> followed by the first 80 bits of SHA-256(public key) in lowercase RFC 4648 base32
    /// (16 characters), e.g. <c>swarm:q3k7…</c>.
    /// </summary>
    /// <remarks>
    /// A name for people and logs, not a security check: 80 bits resist accidental collisions, but pinning and
    /// access decisions compare the full 32-byte key.
    /// </remarks>
    public static string Fingerprint(ReadOnlySpan<byte> publicKey)
    {
        if (publicKey.Length != Length) throw new ArgumentException($"A public key is {Length} bytes, not {publicKey.Length}.", nameof(publicKey));
        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(publicKey, digest);
        return FingerprintPrefix + Base32(digest[..10]);
    }

    /// <summary>The full key as 64 lowercase hex digits.</summary>
    public static string Format(ReadOnlySpan<byte> publicKey)
    {
        if (publicKey.Length != Length) throw new ArgumentException($"A public key is {Length} bytes, not {publicKey.Length}.", nameof(publicKey));
        return Convert.ToHexStringLower(publicKey);
    }

    /// <summary>Parses a key written by <see cref="Format"/> (64 hex digits, either case, surrounding blanks ignored).</summary>
    /// <returns>False, with the reason in <paramref name="error"/>, for anything else.</returns>
    public static bool TryParse(string? text, out byte[] publicKey, out string? error)
    {
        publicKey = [];
        text = text?.Trim();
        if (string.IsNullOrEmpty(text)) { error = "the public key is empty"; return false; }
        if (text.StartsWith(FingerprintPrefix, StringComparison.Ordinal))
        {
            error = $"'{text}' is a fingerprint; pinning needs the full public key ({Length * 2} hex digits)";
            return false;
        }
        if (text.Length != Length * 2 || !text.All(Uri.IsHexDigit))
        {
            error = $"a public key is {Length * 2} hex digits; got {text.Length} characters";
            return false;
        }
        publicKey = Convert.FromHexString(text);
        error = null;
        return true;
    }

    /// <summary>Constant-time equality of two keys (false for different lengths).</summary>
    public static bool AreEqual(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b) =>
        a.Length == b.Length && CryptographicOperations.FixedTimeEquals(a, b);

    private static string Base32(ReadOnlySpan<byte> data)
    {
        var chars = new char[(data.Length * 8 + 4) / 5];
        int buffer = 0, bits = 0, c = 0;
        foreach (byte b in data)
        {
            buffer = ((buffer << 8) | b) & 0xFFFF;
            bits += 8;
            while (bits >= 5)
            {
                bits -= 5;
                chars[c++] = Base32Alphabet[(buffer >> bits) & 31];
            }
        }
        if (bits > 0) chars[c++] = Base32Alphabet[(buffer << (5 - bits)) & 31];
        return new string(chars, 0, c);
    }
}
