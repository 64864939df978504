namespace Swarm.Transport.Security;

/// <summary>
/// An established channel to one authenticated peer: seals payloads into records and opens the peer's records
/// (<see cref="RecordFormat"/>), with per-direction keys from the Noise handshake's Split(), explicit counter
/// nonces, a replay window and key rotation. Made by a <see cref="SecureHandshake"/>. Thread-safe.
/// </summary>
/// <remarks>
/// Threat model: an attacker on the path (a relay, anyone on the network) sees record sizes, timing and counters,
/// but cannot read payloads, alter them, inject records, or replay them unnoticed: every such record is dropped by
/// <see cref="TryOpen"/> and counted in <see cref="Counters"/>, never thrown. It can still drop or delay records;
/// the layer above (LiteNetLib's reliability) handles that. The peer itself is only as trustworthy as
/// <see cref="RemoteStaticKey"/>: the channel proves who it is, not that it behaves.
/// </remarks>
internal sealed class SecureChannel : IDisposable
{
    private readonly RecordSealer _sealer;
    private readonly RecordOpener _opener;
    private readonly byte[] _remoteKey;
    private readonly byte[] _handshakeHash;

    internal SecureChannel(bool isInitiator, string protocolName, byte[] remoteStaticKey, byte[] handshakeHash,
                           NoiseCipherState send, NoiseCipherState receive, RecordCipherOptions options, SecureChannelCounters counters)
    {
        IsInitiator = isInitiator;
        ProtocolName = protocolName;
        _remoteKey = remoteStaticKey;
        _handshakeHash = handshakeHash;
        RemoteFingerprint = PeerKey.Fingerprint(remoteStaticKey);
        Counters = counters;
        _sealer = new RecordSealer(send, options, counters);
        _opener = new RecordOpener(receive, options, counters);
    }

    /// <summary>Bytes a record adds to its payload (13-byte header and 16-byte tag).</summary>
    public const int Overhead = RecordFormat.Overhead;

    /// <summary>True on the side that started the handshake.</summary>
    public bool IsInitiator { get; }

    /// <summary>The Noise protocol the handshake ran, e.g. <c>Noise_XXpsk3_25519_ChaChaPoly_SHA256</c>.</summary>
    public string ProtocolName { get; }

    /// <summary>The peer's static public key, proven by the handshake: the peer's identity.</summary>
    public ReadOnlyMemory<byte> RemoteStaticKey => _remoteKey;

    /// <summary>The short name of <see cref="RemoteStaticKey"/> for logs.</summary>
    public string RemoteFingerprint { get; }

    /// <summary>
    /// The Noise handshake hash: equal on both sides, unique to this session; usable as a channel binding.
    /// </summary>
    public ReadOnlyMemory<byte> HandshakeHash => _handshakeHash;

    /// <summary>The counters this channel updates (possibly shared with other channels).</summary>
    public SecureChannelCounters Counters { get; }

    /// <summary>The key epoch of the sending direction.</summary>
    public uint SendEpoch => _sealer.Epoch;

    /// <summary>The newest key epoch the peer's records authenticated under.</summary>
    public uint ReceiveEpoch => _opener.Epoch;

    /// <summary>True when <paramref name="frame"/> has the kind byte of a record (not proof that it is one).</summary>
    public static bool IsRecord(ReadOnlySpan<byte> frame) => !frame.IsEmpty && frame[0] == RecordFormat.Kind;

    /// <summary>A record carrying <paramref name="payload"/> for the peer.</summary>
    /// <exception cref="ObjectDisposedException">The channel is closed.</exception>
    public byte[] Seal(ReadOnlySpan<byte> payload) => _sealer.Seal(payload);

    /// <summary>Writes a record carrying <paramref name="payload"/> into <paramref name="record"/> (payload length + <see cref="Overhead"/> bytes).</summary>
    /// <exception cref="ObjectDisposedException">The channel is closed.</exception>
    public void Seal(ReadOnlySpan<byte> payload, Span<byte> record) => _sealer.Seal(payload, record);

    /// <summary>
    /// Opens a record from the peer. Anything else — malformed, replayed, too old, of an unknown key epoch, or
    /// failing authentication — is refused with the reason and counted; this never throws for peer input.
    /// </summary>
    public OpenResult TryOpen(ReadOnlySpan<byte> record, out byte[] payload) => _opener.TryOpen(record, out payload);

    /// <inheritdoc />
    public override string ToString() => $"{ProtocolName} with {RemoteFingerprint}";

    /// <summary>Destroys the keys; later <see cref="Seal(ReadOnlySpan{byte})"/> calls throw and records are refused.</summary>
    public void Dispose()
    {
        _sealer.Dispose();
        _opener.Dispose();
    }
}
