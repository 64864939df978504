using System.Buffers;
using System.Security.Cryptography;
using NSec.Cryptography;

namespace Swarm.Transport.Security;

/// <summary>
/// A Noise HandshakeState (spec rev 34, §5.3) for <see cref="NoisePattern.XX"/> and
/// <see cref="NoisePattern.XXpsk3"/> with DH 25519 (X25519 from libsodium via NSec). Call
/// <see cref="WriteMessage"/> and <see cref="ReadMessage"/> in the pattern's turn order; after the last message
/// <see cref="IsComplete"/> is true and <see cref="TakeTransportCiphers"/> hands over the two cipher states of Split().
/// </summary>
/// <remarks>
/// Any failure (a message that does not authenticate, is malformed, or carries a low-order public key) throws a
/// <see cref="NoiseException"/> and leaves the state failed: it refuses further use, as the spec requires that a
/// failed HandshakeState is deleted. Not thread-safe.
/// </remarks>
internal sealed class NoiseHandshakeState : IDisposable
{
    /// <summary>The largest Noise message (spec §3).</summary>
    public const int MaxMessageLength = 65535;

    /// <summary>DHLEN for 25519.</summary>
    public const int DhLength = 32;

    private static readonly KeyAgreementAlgorithm X25519 = KeyAgreementAlgorithm.X25519;

    private readonly NoisePattern _pattern;
    private readonly NoiseSymmetricState _symmetric;
    private readonly Key _s;
    private readonly byte[] _psk;
    private Key? _e;
    private PublicKey? _rs;
    private PublicKey? _re;
    private int _messageIndex;
    private bool _failed;
    private (NoiseCipherState, NoiseCipherState)? _split;

    /// <summary>
    /// Initialize(): InitializeSymmetric(protocol_name), MixHash(prologue); sets the role and keys. XX has no
    /// pre-messages.
    /// </summary>
    /// <param name="pattern">The handshake pattern.</param>
    /// <param name="initiator">True for the party that sends the first message.</param>
    /// <param name="prologue">Data both parties must agree on; hashed into h, never sent.</param>
    /// <param name="localStatic">Our static X25519 key pair (s); the caller keeps ownership.</param>
    /// <param name="psk">The 32-byte pre-shared key for psk patterns; must be empty otherwise.</param>
    /// <param name="localEphemeral">
    /// A fixed ephemeral key pair (e), for test vectors only; this state takes ownership. Null generates a fresh one
    /// from libsodium's CSPRNG when the pattern needs it.
    /// </param>
    public NoiseHandshakeState(NoisePattern pattern, bool initiator, ReadOnlySpan<byte> prologue, Key localStatic,
                               ReadOnlySpan<byte> psk, Key? localEphemeral = null)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        ArgumentNullException.ThrowIfNull(localStatic);
        if (localStatic.Algorithm is not NSec.Cryptography.X25519) throw new ArgumentException("The static key must be an X25519 key.", nameof(localStatic));
        if (pattern.UsesPsk && psk.Length != 32)
            throw new ArgumentException($"{pattern.ProtocolName} needs a 32-byte pre-shared key, not {psk.Length} bytes.", nameof(psk));
        if (!pattern.UsesPsk && !psk.IsEmpty)
            throw new ArgumentException($"{pattern.ProtocolName} takes no pre-shared key.", nameof(psk));
        _pattern = pattern;
        IsInitiator = initiator;
        _s = localStatic;
        _psk = psk.ToArray();
        _e = localEphemeral;
        _symmetric = new NoiseSymmetricState(pattern.ProtocolName);
        _symmetric.MixHash(prologue);
    }

    /// <summary>True for the initiator.</summary>
    public bool IsInitiator { get; }

    /// <summary>True once every message of the pattern was written or read.</summary>
    public bool IsComplete => _messageIndex == _pattern.Messages.Count;

    /// <summary>True when it is our turn to call <see cref="WriteMessage"/>.</summary>
    public bool IsMyTurn => !IsComplete && (_messageIndex % 2 == 0) == IsInitiator;

    /// <summary>The 1-based number of the next message of the pattern.</summary>
    public int NextMessageNumber => _messageIndex + 1;

    /// <summary>The remote party's static public key (rs) once received, else null.</summary>
    public byte[]? RemoteStaticPublicKey => _rs?.Export(KeyBlobFormat.RawPublicKey);

    /// <summary>The handshake hash h (GetHandshakeHash()); after completion it identifies the session.</summary>
    public byte[] HandshakeHash => _symmetric.GetHandshakeHash();

    /// <summary>WriteMessage(payload, message_buffer): the next message of the pattern, carrying <paramref name="payload"/>.</summary>
    /// <exception cref="NoiseException">The message would exceed 65535 bytes or a DH failed.</exception>
    public byte[] WriteMessage(ReadOnlySpan<byte> payload)
    {
        EnsureUsable();
        if (!IsMyTurn) throw new InvalidOperationException($"Message {NextMessageNumber} is the peer's to send.");
        try
        {
            var buffer = new ArrayBufferWriter<byte>(DhLength * 2 + payload.Length + 2 * NoiseCipherState.TagSize);
            foreach (var token in _pattern.Messages[_messageIndex])
            {
                switch (token)
                {
                    case NoiseToken.E:
                        _e ??= Key.Create(X25519);
                        var ePublic = _e.PublicKey.Export(KeyBlobFormat.RawPublicKey);
                        buffer.Write(ePublic);
                        _symmetric.MixHash(ePublic);
                        if (_pattern.UsesPsk) _symmetric.MixKey(ePublic);
                        break;
                    case NoiseToken.S:
                        buffer.Write(_symmetric.EncryptAndHash(_s.PublicKey.Export(KeyBlobFormat.RawPublicKey)));
                        break;
                    default:
                        MixToken(token);
                        break;
                }
            }
            buffer.Write(_symmetric.EncryptAndHash(payload));
            if (buffer.WrittenCount > MaxMessageLength)
                throw new NoiseException($"handshake message {NextMessageNumber} would be {buffer.WrittenCount} bytes; Noise allows {MaxMessageLength}");
            Advance();
            return buffer.WrittenSpan.ToArray();
        }
        catch
        {
            _failed = true;
            throw;
        }
    }

    /// <summary>ReadMessage(message, payload_buffer): processes the peer's next message and returns its payload.</summary>
    /// <exception cref="NoiseException">The message is malformed, does not authenticate, or carries an unusable key.</exception>
    public byte[] ReadMessage(ReadOnlySpan<byte> message)
    {
        EnsureUsable();
        if (IsComplete || IsMyTurn) throw new InvalidOperationException($"Message {NextMessageNumber} is ours to send, not to read.");
        try
        {
            int number = NextMessageNumber;
            if (message.Length > MaxMessageLength)
                throw new NoiseException($"handshake message {number} is {message.Length} bytes; Noise allows {MaxMessageLength}");
            foreach (var token in _pattern.Messages[_messageIndex])
            {
                switch (token)
                {
                    case NoiseToken.E:
                        var ePublic = Take(ref message, DhLength, number, "ephemeral key");
                        _re = ImportPublic(ePublic, number, "ephemeral");
                        _symmetric.MixHash(ePublic);
                        if (_pattern.UsesPsk) _symmetric.MixKey(ePublic);
                        break;
                    case NoiseToken.S:
                        int length = DhLength + (_symmetric.HasKey ? NoiseCipherState.TagSize : 0);
                        var sealedStatic = Take(ref message, length, number, "static key");
                        byte[] sPublic;
                        try { sPublic = _symmetric.DecryptAndHash(sealedStatic); }
                        catch (NoiseException e) { throw new NoiseException($"handshake message {number}: the static key did not authenticate", e); }
                        _rs = ImportPublic(sPublic, number, "static");
                        break;
                    default:
                        MixToken(token);
                        break;
                }
            }
            byte[] payload;
            try { payload = _symmetric.DecryptAndHash(message); }
            catch (NoiseException e) { throw new NoiseException($"handshake message {number}: the payload did not authenticate", e); }
            Advance();
            return payload;
        }
        catch
        {
            _failed = true;
            throw;
        }
    }

    /// <summary>
    /// The cipher states of Split() as (send, receive) for this party; ownership passes to the caller and a second
    /// call throws.
    /// </summary>
    public (NoiseCipherState Send, NoiseCipherState Receive) TakeTransportCiphers()
    {
        var (c1, c2) = _split ?? throw new InvalidOperationException("The handshake is not complete, or its ciphers were taken already.");
        _split = null;
        return IsInitiator ? (c1, c2) : (c2, c1);
    }

    /// <summary>Forgets every secret this state still holds (including untaken transport ciphers).</summary>
    public void Dispose()
    {
        _symmetric.Dispose();
        _e?.Dispose();
        _e = null;
        CryptographicOperations.ZeroMemory(_psk);
        if (_split is var (c1, c2))
        {
            c1.Dispose();
            c2.Dispose();
            _split = null;
        }
    }

    private void MixToken(NoiseToken token)
    {
        switch (token)
        {
            case NoiseToken.EE: MixDh(Ephemeral, RemoteEphemeral); break;
            case NoiseToken.ES: if (IsInitiator) MixDh(Ephemeral, RemoteStatic); else MixDh(_s, RemoteEphemeral); break;
            case NoiseToken.SE: if (IsInitiator) MixDh(_s, RemoteEphemeral); else MixDh(Ephemeral, RemoteStatic); break;
            case NoiseToken.SS: MixDh(_s, RemoteStatic); break;
            case NoiseToken.Psk: _symmetric.MixKeyAndHash(_psk); break;
            default: throw new InvalidOperationException($"Token {token} is not a DH or psk token.");
        }
    }

    /// <summary>MixKey(DH(local, remote)); a low-order remote key (all-zero shared secret) is an error.</summary>
    private void MixDh(Key local, PublicKey remote)
    {
        var exportable = new SharedSecretCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport };
        using var shared = X25519.Agree(local, remote, in exportable)
            ?? throw new NoiseException($"handshake message {NextMessageNumber}: the peer's public key is a low-order point (no shared secret)");
        Span<byte> dh = stackalloc byte[DhLength];
        try
        {
            if (!shared.TryExport(SharedSecretBlobFormat.RawSharedSecret, dh, out int written) || written != DhLength)
                throw new CryptographicException("X25519 produced no 32-byte shared secret.");
            _symmetric.MixKey(dh);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(dh);
        }
    }

    private Key Ephemeral => _e ?? throw new InvalidOperationException("No local ephemeral key yet.");
    private PublicKey RemoteEphemeral => _re ?? throw new InvalidOperationException("No remote ephemeral key yet.");
    private PublicKey RemoteStatic => _rs ?? throw new InvalidOperationException("No remote static key yet.");

    private void Advance()
    {
        _messageIndex++;
        if (IsComplete) _split = _symmetric.Split();
    }

    private void EnsureUsable()
    {
        if (_failed) throw new InvalidOperationException("The handshake failed earlier; start a new one.");
    }

    private static ReadOnlySpan<byte> Take(ref ReadOnlySpan<byte> message, int length, int number, string what)
    {
        if (message.Length < length)
            throw new NoiseException($"handshake message {number} is too short: {message.Length} bytes left where the {what} needs {length}");
        var taken = message[..length];
        message = message[length..];
        return taken;
    }

    private static PublicKey ImportPublic(ReadOnlySpan<byte> bytes, int number, string what) =>
        PublicKey.TryImport(X25519, bytes, KeyBlobFormat.RawPublicKey, out var key) && key != null
            ? key
            : throw new NoiseException($"handshake message {number}: the {what} public key is not a valid X25519 key");
}
