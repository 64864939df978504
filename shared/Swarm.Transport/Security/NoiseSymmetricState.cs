using System.Security.Cryptography;
using System.Text;

namespace Swarm.Transport.Security;

/// <summary>
/// A Noise SymmetricState (spec rev 34, §5.2): the chaining key ck, the handshake hash h and a
/// <see cref="NoiseCipherState"/>, with exactly the spec's operations. Not thread-safe.
/// </summary>
internal sealed class NoiseSymmetricState : IDisposable
{
    private readonly byte[] _ck = new byte[NoiseHash.HashLength];
    private readonly byte[] _h = new byte[NoiseHash.HashLength];
    private readonly NoiseCipherState _cipher = new();

    /// <summary>
    /// InitializeSymmetric(protocol_name): h = the name padded with zeros when it fits HASHLEN bytes, else
    /// HASH(name); ck = h; no cipher key.
    /// </summary>
    public NoiseSymmetricState(string protocolName)
    {
        var name = Encoding.ASCII.GetBytes(protocolName);
        if (name.Length <= NoiseHash.HashLength)
            name.CopyTo(_h, 0);
        else
            SHA256.HashData(name, _h);
        _h.CopyTo(_ck, 0);
    }

    /// <summary>True once the cipher has a key (payloads are then encrypted).</summary>
    public bool HasKey => _cipher.HasKey;

    /// <summary>MixKey(ikm): ck, temp_k = HKDF(ck, ikm, 2); InitializeKey(temp_k).</summary>
    public void MixKey(ReadOnlySpan<byte> inputKeyMaterial)
    {
        Span<byte> tempK = stackalloc byte[NoiseHash.HashLength];
        try
        {
            NoiseHash.Hkdf(_ck, inputKeyMaterial, _ck, tempK);
            _cipher.InitializeKey(tempK);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(tempK);
        }
    }

    /// <summary>MixHash(data): h = HASH(h || data).</summary>
    public void MixHash(ReadOnlySpan<byte> data) => NoiseHash.Hash(_h, data, _h);

    /// <summary>
    /// MixKeyAndHash(ikm), used for pre-shared keys: ck, temp_h, temp_k = HKDF(ck, ikm, 3); MixHash(temp_h);
    /// InitializeKey(temp_k).
    /// </summary>
    public void MixKeyAndHash(ReadOnlySpan<byte> inputKeyMaterial)
    {
        Span<byte> tempH = stackalloc byte[NoiseHash.HashLength];
        Span<byte> tempK = stackalloc byte[NoiseHash.HashLength];
        try
        {
            NoiseHash.Hkdf(_ck, inputKeyMaterial, _ck, tempH, tempK);
            MixHash(tempH);
            _cipher.InitializeKey(tempK);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(tempH);
            CryptographicOperations.ZeroMemory(tempK);
        }
    }

    /// <summary>GetHandshakeHash(): a copy of h.</summary>
    public byte[] GetHandshakeHash() => (byte[])_h.Clone();

    /// <summary>EncryptAndHash(plaintext): ciphertext = EncryptWithAd(h, plaintext); MixHash(ciphertext).</summary>
    public byte[] EncryptAndHash(ReadOnlySpan<byte> plaintext)
    {
        var ciphertext = _cipher.EncryptWithAd(_h, plaintext);
        MixHash(ciphertext);
        return ciphertext;
    }

    /// <summary>DecryptAndHash(ciphertext): plaintext = DecryptWithAd(h, ciphertext); MixHash(ciphertext).</summary>
    /// <exception cref="NoiseException">The ciphertext did not authenticate.</exception>
    public byte[] DecryptAndHash(ReadOnlySpan<byte> ciphertext)
    {
        var plaintext = _cipher.DecryptWithAd(_h, ciphertext);
        MixHash(ciphertext);
        return plaintext;
    }

    /// <summary>
    /// Split(): temp_k1, temp_k2 = HKDF(ck, zerolen, 2); two cipher states keyed with them — the first for the
    /// initiator's sending direction, the second for the responder's.
    /// </summary>
    public (NoiseCipherState InitiatorToResponder, NoiseCipherState ResponderToInitiator) Split()
    {
        Span<byte> k1 = stackalloc byte[NoiseHash.HashLength];
        Span<byte> k2 = stackalloc byte[NoiseHash.HashLength];
        try
        {
            NoiseHash.Hkdf(_ck, ReadOnlySpan<byte>.Empty, k1, k2);
            var c1 = new NoiseCipherState();
            var c2 = new NoiseCipherState();
            c1.InitializeKey(k1);
            c2.InitializeKey(k2);
            return (c1, c2);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(k1);
            CryptographicOperations.ZeroMemory(k2);
        }
    }

    /// <summary>Forgets ck, h and the cipher key.</summary>
    public void Dispose()
    {
        CryptographicOperations.ZeroMemory(_ck);
        CryptographicOperations.ZeroMemory(_h);
        _cipher.Dispose();
    }
}
