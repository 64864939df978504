namespace Swarm.Transport.Security;

/// <summary>Where a <see cref="SecureHandshake"/> stands.</summary>
internal enum HandshakeStatus
{
    /// <summary>Waiting for the peer's next frame.</summary>
    InProgress,
    /// <summary>Done: <see cref="SecureHandshake.Channel"/> is ready.</summary>
    Established,
    /// <summary>Failed for good: <see cref="SecureHandshake.Error"/> says why.</summary>
    Failed,
}

/// <summary>The result of feeding a frame to a <see cref="SecureHandshake"/>.</summary>
/// <param name="Status">The handshake's status afterwards.</param>
/// <param name="Reply">A frame to send to the peer, or null.</param>
/// <param name="Error">Why it failed (for the log), when <paramref name="Status"/> is Failed.</param>
internal readonly record struct HandshakeStep(HandshakeStatus Status, byte[]? Reply, string? Error);

/// <summary>
/// Runs the Noise handshake between two peers as opaque frames (<see cref="HandshakeFrame"/>) over any reliable,
/// ordered channel, and yields a <see cref="SecureChannel"/>. The initiator calls <see cref="Start"/> and sends the
/// frame; each side passes every frame it receives to <see cref="Receive"/> and sends the reply, until the status
/// is Established or Failed. Three Noise messages plus the responder's confirmation: two round trips.
/// </summary>
/// <remarks>
/// Threat model: both sides prove their static keys (Noise XX); with a PSK (XXpsk3) only holders of the same
/// key complete, and the PSK is never sent. A pinned key (<see cref="SecureChannelOptions.ExpectedRemoteKey"/>)
/// is checked by the initiator before message 3, so an impostor responder never sees anything under the PSK.
/// A man in the middle without the PSK, or facing a pinned key, can only make the handshake fail. Refusal frames
/// are unauthenticated (an attacker could forge one) and only explain a failure; they never grant anything.
/// Identity hiding is Noise XX's: the initiator's static key is encrypted to the responder's, which an active
/// attacker can learn. Peer input never throws out of <see cref="Receive"/>. Not thread-safe.
/// </remarks>
internal sealed class SecureHandshake : IDisposable
{
    private enum Stage { NotStarted, AwaitHello, AwaitMessage2, AwaitMessage3, AwaitConfirmation, Done }

    private readonly SecureChannelOptions _options;
    private readonly NoiseHandshakeState _noise;
    private Stage _stage;
    private SecureChannel? _pending;

    private SecureHandshake(NodeIdentity identity, SecureChannelOptions options, bool initiator)
    {
        ArgumentNullException.ThrowIfNull(identity);
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate();
        if (errors.Count > 0) throw new ArgumentException("Invalid secure channel options: " + string.Join("; ", errors), nameof(options));
        _options = options;
        var pattern = options.Psk != null ? NoisePattern.XXpsk3 : NoisePattern.XX;
        _noise = new NoiseHandshakeState(pattern, initiator, options.Prologue, identity.PrivateKey, options.Psk ?? []);
        _stage = initiator ? Stage.NotStarted : Stage.AwaitHello;
    }

    /// <summary>A handshake for the side that connects.</summary>
    public static SecureHandshake CreateInitiator(NodeIdentity identity, SecureChannelOptions options) => new(identity, options, initiator: true);

    /// <summary>A handshake for the side that accepts.</summary>
    public static SecureHandshake CreateResponder(NodeIdentity identity, SecureChannelOptions options) => new(identity, options, initiator: false);

    /// <summary>True for the side that connects.</summary>
    public bool IsInitiator => _noise.IsInitiator;

    /// <summary>The current status.</summary>
    public HandshakeStatus Status { get; private set; } = HandshakeStatus.InProgress;

    /// <summary>Why the handshake failed, else null.</summary>
    public string? Error { get; private set; }

    /// <summary>The established channel (null until then); the caller owns it and disposes it.</summary>
    public SecureChannel? Channel { get; private set; }

    /// <summary>The initiator's first frame, to send to the responder.</summary>
    public byte[] Start()
    {
        if (_stage != Stage.NotStarted) throw new InvalidOperationException("Only an initiator starts a handshake, once.");
        _stage = Stage.AwaitMessage2;
        return HandshakeFrame.CreateHello(_options.Psk != null, _noise.WriteMessage([]));
    }

    /// <summary>Processes a frame from the peer; the step says what to send back and where the handshake stands.</summary>
    public HandshakeStep Receive(ReadOnlySpan<byte> frame)
    {
        if (Status != HandshakeStatus.InProgress) throw new InvalidOperationException($"The handshake is {Status}; it takes no more frames.");
        if (_stage == Stage.NotStarted) throw new InvalidOperationException("Call Start() first.");
        if (!frame.IsEmpty && frame[0] == HandshakeFrame.Reject)
            return Fail($"the peer refused the handshake: {HandshakeFrame.ReadReason(frame)}", rejectReason: null);
        try
        {
            return _stage switch
            {
                Stage.AwaitHello => OnHello(frame),
                Stage.AwaitMessage2 => OnMessage2(frame),
                Stage.AwaitMessage3 => OnMessage3(frame),
                Stage.AwaitConfirmation => OnConfirmation(frame),
                _ => throw new InvalidOperationException($"Unexpected stage {_stage}."),
            };
        }
        catch (NoiseException e)
        {
            return Fail(e.Message, "handshake failed: " + e.Message);
        }
    }

    /// <summary>Forgets the handshake's secrets (an established <see cref="Channel"/> stays open).</summary>
    public void Dispose()
    {
        _noise.Dispose();
        _pending?.Dispose();
        _pending = null;
    }

    private HandshakeStep OnHello(ReadOnlySpan<byte> frame)
    {
        if (frame.Length < 2 || frame[0] != HandshakeFrame.Hello)
            return Fail($"expected a hello, got {HandshakeFrame.Describe(frame)} (not a Swarm peer?)", "expected a hello frame");
        bool wePsk = _options.Psk != null, theyPsk = frame[1] == HandshakeFrame.ModePsk;
        if (wePsk && !theyPsk)
            return Fail("the peer connects without a swarm secret, but this swarm requires one", "this swarm requires a swarm secret; you have none");
        if (!wePsk && theyPsk)
            return Fail("the peer connects with a swarm secret, but this is an open swarm (no secret configured)", "this is an open swarm; it has no swarm secret");
        _noise.ReadMessage(frame[2..]);
        _stage = Stage.AwaitMessage3;
        return InProgress(HandshakeFrame.CreateMessage(_noise.WriteMessage([])));
    }

    private HandshakeStep OnMessage2(ReadOnlySpan<byte> frame)
    {
        if (frame.IsEmpty || frame[0] != HandshakeFrame.Message)
            return Fail($"expected handshake message 2, got {HandshakeFrame.Describe(frame)}", "expected handshake message 2");
        try { _noise.ReadMessage(frame[1..]); }
        catch (NoiseException e)
        {
            return Fail($"{e.Message} — the peers' prologues (protocol versions) differ, or the message was altered in transit",
                        "handshake message 2 did not authenticate (different protocol versions?)");
        }
        var refusal = CheckRemoteKey(_noise.RemoteStaticPublicKey!);
        if (refusal != null) return Fail(refusal.Value.Log, refusal.Value.Peer);
        var message3 = HandshakeFrame.CreateMessage(_noise.WriteMessage([]));
        _pending = CreateChannel();
        _stage = Stage.AwaitConfirmation;
        return InProgress(message3);
    }

    private HandshakeStep OnMessage3(ReadOnlySpan<byte> frame)
    {
        if (frame.IsEmpty || frame[0] != HandshakeFrame.Message)
            return Fail($"expected handshake message 3, got {HandshakeFrame.Describe(frame)}", "expected handshake message 3");
        try { _noise.ReadMessage(frame[1..]); }
        catch (NoiseException e) when (_options.Psk != null)
        {
            return Fail($"the swarm secrets differ: {e.Message} (or the message was altered in transit)", "the swarm secrets differ");
        }
        var refusal = CheckRemoteKey(_noise.RemoteStaticPublicKey!);
        if (refusal != null) return Fail(refusal.Value.Log, refusal.Value.Peer);
        var channel = CreateChannel();
        var confirmation = channel.Seal([]);
        return Establish(channel, confirmation);
    }

    private HandshakeStep OnConfirmation(ReadOnlySpan<byte> frame)
    {
        var result = _pending!.TryOpen(frame, out var payload);
        if (result != OpenResult.Opened || payload.Length != 0)
            return Fail($"the responder's confirmation did not open ({result}): the swarm secrets may differ, or it was altered in transit",
                        "your confirmation did not authenticate");
        var channel = _pending;
        _pending = null;
        return Establish(channel, reply: null);
    }

    /// <summary>Pin, then policy; null when the peer's proven key is acceptable.</summary>
    private (string Log, string Peer)? CheckRemoteKey(byte[] remoteKey)
    {
        var fingerprint = PeerKey.Fingerprint(remoteKey);
        if (_options.ExpectedRemoteKey is { } pinned && !PeerKey.AreEqual(pinned, remoteKey))
        {
            var expected = PeerKey.Fingerprint(pinned);
            return ($"the peer's key {fingerprint} is not the pinned key {expected}",
                    $"your key {fingerprint} is not the key this peer pinned ({expected})");
        }
        var reason = _options.AuthorizeRemoteKey?.Invoke(remoteKey);
        return reason == null ? null : ($"the peer's key {fingerprint} is not accepted: {reason}", $"your key {fingerprint} is not accepted: {reason}");
    }

    private SecureChannel CreateChannel()
    {
        var (send, receive) = _noise.TakeTransportCiphers();
        return new SecureChannel(IsInitiator, ProtocolName, _noise.RemoteStaticPublicKey!,
                                 _noise.HandshakeHash, send, receive, _options.Records, _options.Counters);
    }

    private string ProtocolName => (_options.Psk != null ? NoisePattern.XXpsk3 : NoisePattern.XX).ProtocolName;

    private HandshakeStep Establish(SecureChannel channel, byte[]? reply)
    {
        Channel = channel;
        Status = HandshakeStatus.Established;
        _stage = Stage.Done;
        _noise.Dispose();
        return new HandshakeStep(Status, reply, null);
    }

    private static HandshakeStep InProgress(byte[] reply) => new(HandshakeStatus.InProgress, reply, null);

    private HandshakeStep Fail(string error, string? rejectReason)
    {
        Status = HandshakeStatus.Failed;
        Error = error;
        _stage = Stage.Done;
        Dispose();
        return new HandshakeStep(Status, rejectReason == null ? null : HandshakeFrame.CreateReject(rejectReason), error);
    }
}
