using System.Security.Cryptography;

namespace Swarm.Transport.Security;

/// <summary>
/// The hash functions of the Noise Protocol Framework (rev 34, §4.3) for the hash "SHA256": HASH, HMAC-HASH and HKDF.
/// </summary>
/// <remarks>
/// SHA-256 and HMAC-SHA256 come from <c>System.Security.Cryptography</c> (OpenSSL on Linux). NSec's HKDF is not used
/// because it refuses zero-length input keying material, which Noise's <c>Split()</c> needs (HKDF(ck, zerolen)).
/// HKDF is written out exactly as the spec defines it (equal to RFC 5869 with the chaining key as salt and an
/// empty info); the published test vectors check it.
/// </remarks>
internal static class NoiseHash
{
    /// <summary>HASHLEN: 32 bytes for SHA-256.</summary>
    public const int HashLength = 32;

    /// <summary>HASH(a || b) into <paramref name="output"/> (which may alias <paramref name="a"/>).</summary>
    public static void Hash(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b, Span<byte> output)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(a);
        hash.AppendData(b);
        if (!hash.TryGetHashAndReset(output, out int written) || written != HashLength)
            throw new CryptographicException("SHA-256 produced no 32-byte digest.");
    }

    /// <summary>
    /// HKDF(chaining_key, input_key_material, 2): writes output1 and output2 (32 bytes each).
    /// </summary>
    public static void Hkdf(ReadOnlySpan<byte> chainingKey, ReadOnlySpan<byte> inputKeyMaterial, Span<byte> output1, Span<byte> output2) =>
        Hkdf(chainingKey, inputKeyMaterial, output1, output2, Span<byte>.Empty);

    /// <summary>
    /// HKDF(chaining_key, input_key_material, num_outputs) of spec §4.3: temp_key = HMAC(ck, ikm),
    /// output1 = HMAC(temp_key, 0x01), output2 = HMAC(temp_key, output1 || 0x02),
    /// output3 = HMAC(temp_key, output2 || 0x03) when <paramref name="output3"/> is not empty.
    /// Outputs may alias <paramref name="chainingKey"/> (it is read first).
    /// </summary>
    public static void Hkdf(ReadOnlySpan<byte> chainingKey, ReadOnlySpan<byte> inputKeyMaterial,
                            Span<byte> output1, Span<byte> output2, Span<byte> output3)
    {
        Span<byte> tempKey = stackalloc byte[HashLength];
        Span<byte> block = stackalloc byte[HashLength + 1];
        try
        {
            HMACSHA256.HashData(chainingKey, inputKeyMaterial, tempKey);

            block[0] = 0x01;
            HMACSHA256.HashData(tempKey, block[..1], output1);

            output1.CopyTo(block);
            block[HashLength] = 0x02;
            HMACSHA256.HashData(tempKey, block, output2);

            if (!output3.IsEmpty)
            {
                output2.CopyTo(block);
                block[HashLength] = 0x03;
                HMACSHA256.HashData(tempKey, block, output3);
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(tempKey);
            CryptographicOperations.ZeroMemory(block);
        }
    }
}
