using System.Text;
using Swarm.Transport.Security;

namespace Swarm.Transport;

/// <summary>
/// Runs the Noise handshake of each connection of a <see cref="LiteNetTransport"/> (<see cref="SecureHandshake"/>) on
/// the transport's poll thread: a responder for every accepted connection, an initiator for every connection we open,
/// with the identity, the PSK derived from the swarm secret, the pin of the caller and the inbound policy of the
/// options. It sends the handshake frames, hands an established channel to the transport, and ends a connection whose
/// handshake failed or timed out — counted, logged, and with the reason sent to the peer in the disconnect.
/// </summary>
internal sealed class PeerAuthenticator : IDisposable
{
    private readonly TransportOptions _options;
    private readonly TransportCounters _counters;
    private readonly TransportDiagnostics _diagnostics;
    private readonly Action<TransportPeer, byte[]> _close;
    private readonly Action<TransportPeer, SecureChannel> _established;
    private readonly NodeIdentity _identity;
    private readonly bool _ownsIdentity;
    private readonly byte[]? _psk;
    private readonly byte[] _prologue;

    /// <param name="options">The transport's options.</param>
    /// <param name="counters">The transport's counters (handshake outcomes; every channel counts its records in <see cref="TransportCounters.Records"/>).</param>
    /// <param name="diagnostics">Where refusals are counted and logged.</param>
    /// <param name="close">Closes a peer's UDP connection, sending the given reason (may be empty).</param>
    /// <param name="established">Surfaces a peer whose handshake completed.</param>
    public PeerAuthenticator(TransportOptions options, TransportCounters counters, TransportDiagnostics diagnostics,
        Action<TransportPeer, byte[]> close, Action<TransportPeer, SecureChannel> established)
    {
        _options = options;
        _counters = counters;
        _diagnostics = diagnostics;
        _close = close;
        _established = established;
        _ownsIdentity = options.Identity is null;
        _identity = options.Identity ?? NodeIdentity.CreateEphemeral();
        _psk = SwarmPsk.Derive(options.Secret);
        _prologue = Encoding.UTF8.GetBytes($"swarm/{options.ProtocolVersion}");
    }

    /// <summary>Our static public key.</summary>
    public ReadOnlyMemory<byte> LocalKey => _identity.PublicKey;

    /// <summary>Our fingerprint, for the log.</summary>
    public string LocalFingerprint => _identity.Fingerprint;

    /// <summary>Pattern of every handshake: Noise_XXpsk3 with a secret, Noise_XX without.</summary>
    public string ProtocolName => _psk != null ? "Noise_XXpsk3_25519_ChaChaPoly_SHA256" : "Noise_XX_25519_ChaChaPoly_SHA256";

    /// <summary>An accepted connection: we answer its handshake, which must complete by the deadline. Idempotent.</summary>
    public void BeginInbound(TransportPeer peer)
    {
        if (peer.Handshake != null || peer.Channel != null || peer.IsClosed) return;
        var authorize = _options.AuthorizeInbound;
        peer.Handshake = SecureHandshake.CreateResponder(_identity, ChannelOptions(ReadOnlyMemory<byte>.Empty, authorize is null ? null : key => Ask(authorize, key)));
        peer.HandshakeDeadline = _options.Time.GetTimestamp();
        peer.MarkAuthenticating();
    }

    /// <summary>A connection we open: the handshake starts once the UDP connection is up (<see cref="StartOutbound"/>).</summary>
    public void BeginOutbound(TransportPeer peer, ReadOnlyMemory<byte> expectedKey) =>
        peer.Handshake = SecureHandshake.CreateInitiator(_identity, ChannelOptions(expectedKey, authorize: null));

    /// <summary>The UDP connection we opened is up: sends the first handshake message.</summary>
    public void StartOutbound(TransportPeer peer)
    {
        if (peer.Handshake is not { IsInitiator: true } handshake || peer.IsAuthenticating || peer.IsClosed) return;
        peer.HandshakeDeadline = _options.Time.GetTimestamp();
        peer.MarkAuthenticating();
        Framing.SendHandshake(peer, handshake.Start());
    }

    /// <summary>
    /// Feeds a handshake frame from the peer: sends what the handshake answers, surfaces the peer when it is done, ends
    /// the connection when it failed. A frame outside a handshake is malformed.
    /// </summary>
    public void Receive(TransportPeer peer, ReadOnlySpan<byte> frame)
    {
        if (peer.Handshake is not { Status: HandshakeStatus.InProgress } handshake || !peer.IsAuthenticating)
        {
            _diagnostics.Malformed(peer.RemoteEndPoint, "a handshake frame outside a handshake");
            return;
        }
        var step = handshake.Receive(frame);
        switch (step.Status)
        {
            case HandshakeStatus.InProgress:
                Framing.SendHandshake(peer, step.Reply!);
                break;
            case HandshakeStatus.Established:
                if (step.Reply != null) Framing.SendHandshake(peer, step.Reply);
                Interlocked.Increment(ref _counters._handshakesEstablished);
                peer.Handshake = null;
                handshake.Dispose();
                _established(peer, handshake.Channel!);
                break;
            default:
                Fail(peer, step.Error!, RefusalOf(step), timedOut: false);
                break;
        }
    }

    /// <summary>Ends every handshake that has run longer than <see cref="TransportOptions.HandshakeTimeout"/>.</summary>
    public void EndExpired(IEnumerable<TransportPeer> peers)
    {
        foreach (var peer in peers)
            if (peer.IsAuthenticating && _options.Time.GetElapsedTime(peer.HandshakeDeadline) > _options.HandshakeTimeout)
                Fail(peer, $"the handshake did not complete within {_options.HandshakeTimeout.TotalMilliseconds:0} ms", "the handshake timed out", timedOut: true);
    }

    /// <summary>Ends a connection whose handshake failed: counts and logs it, fails its waiters, and tells the peer why.</summary>
    private void Fail(TransportPeer peer, string error, string? tellPeer, bool timedOut)
    {
        Interlocked.Increment(ref timedOut ? ref _counters._handshakesTimedOut : ref _counters._handshakesFailed);
        string reason = error;
        if (peer.IsInbound)
        {
            _diagnostics.Refused(peer.RemoteEndPoint, dropped: false, timedOut ? "handshake timed out" : "handshake failed", error);
        }
        else
        {
            reason = $"{peer.RemoteEndPoint} failed authentication: {error}";
            _diagnostics.ConnectFailed(peer.RemoteEndPoint, inbound: false, reason);
        }
        peer.MarkClosed(reason, refused: !timedOut);
        _close(peer, tellPeer is null ? [] : Encoding.UTF8.GetBytes(tellPeer));
    }

    /// <summary>The reason inside the refusal frame a failed handshake produced, to send with the disconnect.</summary>
    private static string? RefusalOf(HandshakeStep step) =>
        step.Reply is { Length: > 0 } reply && reply[0] == HandshakeFrame.Reject ? HandshakeFrame.ReadReason(reply) : null;

    /// <summary>Forgets the identity when the transport created it.</summary>
    public void Dispose()
    {
        if (_ownsIdentity) _identity.Dispose();
    }

    private SecureChannelOptions ChannelOptions(ReadOnlyMemory<byte> expectedKey, Func<ReadOnlyMemory<byte>, string?>? authorize) => new()
    {
        Psk = _psk,
        Prologue = _prologue,
        ExpectedRemoteKey = expectedKey.IsEmpty ? null : expectedKey.ToArray(),
        AuthorizeRemoteKey = authorize,
        Records = _options.Records,
        Counters = _counters.Records,
    };

    /// <summary>The caller's policy, whose exceptions must not escape into the handshake (they would leave it hanging).</summary>
    private static string? Ask(Func<ReadOnlyMemory<byte>, string?> authorize, ReadOnlyMemory<byte> key)
    {
        try { return authorize(key); }
        catch (Exception e) { return $"the key policy failed ({e.GetType().Name}: {e.Message})"; }
    }
}
