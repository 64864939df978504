using System.Buffers.Binary;
using System.Security.Cryptography;
using NSec.Cryptography;

namespace Swarm.Transport.Security;

/// <summary>
/// A Noise CipherState (spec rev 34, §5.1) for the cipher "ChaChaPoly": ChaCha20-Poly1305 IETF from libsodium (NSec)
/// with the spec's nonce encoding, 32 bits of zeros followed by the little-endian 64-bit counter.
/// </summary>
/// <remarks>
/// Besides the spec's stateful <see cref="EncryptWithAd"/>/<see cref="DecryptWithAd"/> (counter n), the
/// <see cref="EncryptAt"/>/<see cref="TryDecryptAt"/> pair takes the nonce explicitly, as spec §11.4 allows for
/// transports that lose or reorder messages; the caller then owns nonce uniqueness. The key lives inside NSec
/// (libsodium's guarded memory) and is never exported. Not thread-safe.
/// </remarks>
internal sealed class NoiseCipherState : IDisposable
{
    private static readonly AeadAlgorithm Aead = AeadAlgorithm.ChaCha20Poly1305;

    /// <summary>Key length in bytes.</summary>
    public const int KeySize = 32;

    /// <summary>Authentication tag length in bytes.</summary>
    public const int TagSize = 16;

    /// <summary>2^64-1: reserved by the spec for <see cref="Rekey"/>, never used for a message.</summary>
    public const ulong ReservedNonce = ulong.MaxValue;

    private Key? _key;

    /// <summary>The counter n of the next <see cref="EncryptWithAd"/>/<see cref="DecryptWithAd"/>.</summary>
    public ulong Nonce { get; private set; }

    /// <summary>True once a key is set (HasKey() in the spec).</summary>
    public bool HasKey => _key != null;

    /// <summary>InitializeKey(key): sets k and resets n to 0.</summary>
    public void InitializeKey(ReadOnlySpan<byte> key)
    {
        if (key.Length != KeySize) throw new ArgumentException($"A ChaChaPoly key is {KeySize} bytes, not {key.Length}.", nameof(key));
        var next = Key.Import(Aead, key, KeyBlobFormat.RawSymmetricKey);
        _key?.Dispose();
        _key = next;
        Nonce = 0;
    }

    /// <summary>SetNonce(nonce).</summary>
    public void SetNonce(ulong nonce) => Nonce = nonce;

    /// <summary>
    /// EncryptWithAd(ad, plaintext): the ciphertext with its 16-byte tag under nonce n, then n += 1;
    /// the plaintext itself when no key is set.
    /// </summary>
    public byte[] EncryptWithAd(ReadOnlySpan<byte> ad, ReadOnlySpan<byte> plaintext)
    {
        if (_key == null) return plaintext.ToArray();
        var output = new byte[plaintext.Length + TagSize];
        EncryptAt(Nonce, ad, plaintext, output);
        Nonce++;
        return output;
    }

    /// <summary>
    /// DecryptWithAd(ad, ciphertext): the plaintext, then n += 1; the ciphertext itself when no key is set.
    /// </summary>
    /// <exception cref="NoiseException">Authentication failed (n is then left unchanged, as the spec says).</exception>
    public byte[] DecryptWithAd(ReadOnlySpan<byte> ad, ReadOnlySpan<byte> ciphertext)
    {
        if (_key == null) return ciphertext.ToArray();
        if (ciphertext.Length < TagSize)
            throw new NoiseException($"ciphertext of {ciphertext.Length} bytes is shorter than the {TagSize}-byte tag");
        var output = new byte[ciphertext.Length - TagSize];
        if (!TryDecryptAt(Nonce, ad, ciphertext, output))
            throw new NoiseException("message failed authentication");
        Nonce++;
        return output;
    }

    /// <summary>
    /// ENCRYPT(k, nonce, ad, plaintext) with an explicit nonce into <paramref name="output"/>
    /// (plaintext length + <see cref="TagSize"/> bytes). The caller never repeats a nonce under one key.
    /// </summary>
    public void EncryptAt(ulong nonce, ReadOnlySpan<byte> ad, ReadOnlySpan<byte> plaintext, Span<byte> output)
    {
        var key = _key ?? throw new InvalidOperationException("The cipher state has no key.");
        if (nonce == ReservedNonce) throw new NoiseException("nonce 2^64-1 is reserved; the cipher must be rekeyed or the session renewed");
        Span<byte> n = stackalloc byte[12];
        WriteNonce(nonce, n);
        Aead.Encrypt(key, n, ad, plaintext, output);
    }

    /// <summary>
    /// DECRYPT(k, nonce, ad, ciphertext) with an explicit nonce into <paramref name="output"/>
    /// (ciphertext length − <see cref="TagSize"/> bytes). False when the tag does not verify; never throws for
    /// bad input of the right sizes.
    /// </summary>
    public bool TryDecryptAt(ulong nonce, ReadOnlySpan<byte> ad, ReadOnlySpan<byte> ciphertext, Span<byte> output)
    {
        var key = _key ?? throw new InvalidOperationException("The cipher state has no key.");
        if (nonce == ReservedNonce || ciphertext.Length < TagSize) return false;
        Span<byte> n = stackalloc byte[12];
        WriteNonce(nonce, n);
        return Aead.Decrypt(key, n, ad, ciphertext, output);
    }

    /// <summary>Rekey(): k = REKEY(k), n unchanged (spec §4.2, §11.3).</summary>
    public void Rekey()
    {
        var next = RekeyedKey();
        _key!.Dispose();
        _key = next;
    }

    /// <summary>A new cipher state holding REKEY(k) with n = 0; this one is unchanged.</summary>
    public NoiseCipherState CreateRekeyed()
    {
        var next = new NoiseCipherState();
        next._key = RekeyedKey();
        return next;
    }

    /// <summary>Forgets the key.</summary>
    public void Dispose()
    {
        _key?.Dispose();
        _key = null;
    }

    /// <summary>REKEY(k) = the first 32 bytes of ENCRYPT(k, 2^64-1, zerolen, 32 zero bytes) (spec §4.2).</summary>
    private Key RekeyedKey()
    {
        var key = _key ?? throw new InvalidOperationException("The cipher state has no key to rekey.");
        Span<byte> n = stackalloc byte[12];
        WriteNonce(ReservedNonce, n);
        Span<byte> zeros = stackalloc byte[KeySize];
        zeros.Clear();
        Span<byte> output = stackalloc byte[KeySize + TagSize];
        try
        {
            Aead.Encrypt(key, n, ReadOnlySpan<byte>.Empty, zeros, output);
            return Key.Import(Aead, output[..KeySize], KeyBlobFormat.RawSymmetricKey);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(output);
        }
    }

    private static void WriteNonce(ulong counter, Span<byte> nonce)
    {
        nonce[..4].Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(nonce[4..], counter);
    }
}
