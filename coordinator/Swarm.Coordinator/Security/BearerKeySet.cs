using System.Buffers;
using System.Security.Cryptography;
using System.Text;

namespace Swarm.Coordinator.Security;

/// <summary>
/// The bearer keys an endpoint accepts, kept only as SHA-256 digests. A presented key is hashed and compared with
/// every digest by <see cref="CryptographicOperations.FixedTimeEquals"/>, without stopping at a match: how long the
/// check takes says nothing about how much of a key was right, nor which key matched, nor the keys' lengths.
/// </summary>
internal sealed class BearerKeySet
{
    private readonly byte[][] _digests;

    /// <summary>A set of <paramref name="keys"/> (empty entries are ignored; an empty set accepts nothing and protects nothing).</summary>
    public BearerKeySet(IEnumerable<string?> keys)
    {
        ArgumentNullException.ThrowIfNull(keys);
        _digests = keys.Where(k => !string.IsNullOrEmpty(k)).Select(k => SHA256.HashData(Encoding.UTF8.GetBytes(k!))).ToArray();
    }

    /// <summary>An empty set: nothing to check.</summary>
    public static BearerKeySet None { get; } = new([]);

    /// <summary>True when no key is configured, so the endpoints it guards are open.</summary>
    public bool IsEmpty => _digests.Length == 0;

    /// <summary>True when <paramref name="presented"/> is one of the keys.</summary>
    public bool Contains(ReadOnlySpan<char> presented)
    {
        Span<byte> digest = stackalloc byte[SHA256.HashSizeInBytes];
        int max = Encoding.UTF8.GetMaxByteCount(presented.Length);
        byte[] rented = ArrayPool<byte>.Shared.Rent(max);
        try
        {
            int n = Encoding.UTF8.GetBytes(presented, rented);
            SHA256.HashData(rented.AsSpan(0, n), digest);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(rented.AsSpan(0, max));
            ArrayPool<byte>.Shared.Return(rented);
        }
        bool match = false;
        foreach (byte[] known in _digests) match |= CryptographicOperations.FixedTimeEquals(known, digest);
        return match;
    }
}
