using System.Net;
using System.Threading.Channels;
using Swarm.Protocol;
using Swarm.Transport.Security;

namespace Swarm.Transport;

/// <summary>
/// A message endpoint: listens on one UDP port, connects to peers, authenticates them, and moves
/// <see cref="Envelope"/>s of up to <see cref="TransportOptions.MaxMessageBytes"/> in both directions.
/// </summary>
/// <remarks>
/// Every connection runs a Noise handshake before it is surfaced (<see cref="PeerConnected"/>, the result of
/// <see cref="ConnectAsync(IPEndPoint, CancellationToken)"/>): both sides prove their static key, and with a swarm
/// secret only holders of the same secret complete it. Every message after that is encrypted and authenticated;
/// replayed, reordered-beyond-window and altered ones are dropped and counted (<see cref="TransportCounters.Records"/>).
/// </remarks>
/// <remarks>
/// Delivery is reliable but <b>unordered across messages</b>: a small message sent after a large one may
/// arrive first. Replies to <see cref="IPeer.RequestAsync"/> are routed to the waiting caller; every other
/// inbound message (including replies that arrive after their request timed out) goes to <see cref="Inbound"/>.
/// </remarks>
public interface ITransport : IAsyncDisposable
{
    /// <summary>Address and (actual, also when 0 was requested) port the transport listens on.</summary>
    IPEndPoint LocalEndPoint { get; }

    /// <summary>
    /// Inbound messages, bounded to <see cref="TransportOptions.InboundCapacity"/>. When full, new messages are
    /// dropped (never buffered without bound), logged, counted, and answered with <see cref="ErrorReply"/>
    /// (<see cref="ErrorCode.Overloaded"/>) so the sender learns at once. Completed when the transport is disposed.
    /// </summary>
    ChannelReader<InboundMessage> Inbound { get; }

    /// <summary>The public key this transport proves in its handshakes (its identity).</summary>
    ReadOnlyMemory<byte> LocalKey { get; }

    /// <summary>Raised on the transport's poll thread when a peer (either direction) completes authentication. Keep handlers short.</summary>
    event Action<IPeer>? PeerConnected;

    /// <summary>Raised on the poll thread when a connected peer goes away; the string is the reason. Its in-flight requests have already failed.</summary>
    event Action<IPeer, string>? PeerDisconnected;

    /// <summary>Peers currently connected.</summary>
    IReadOnlyCollection<IPeer> Peers { get; }

    /// <summary>Counters, for logs and tests.</summary>
    TransportCounters Counters { get; }

    /// <summary>Connects to, and authenticates with, a remote transport (or returns the existing connection to it), accepting whatever key it proves.</summary>
    /// <exception cref="PeerRefusedException">The remote refused us (wrong secret, protocol version), or the handshake failed; the message carries the reason.</exception>
    /// <exception cref="PeerDisconnectedException">The remote could not be reached, or the handshake did not complete in time.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired.</exception>
    Task<IPeer> ConnectAsync(IPEndPoint remote, CancellationToken cancellationToken = default);

    /// <summary>
    /// Connects to, and authenticates with, a remote transport that must prove <paramref name="expectedKey"/> (pinning);
    /// an empty key accepts any. An existing connection to <paramref name="remote"/> is returned when its key matches.
    /// </summary>
    /// <exception cref="PeerRefusedException">The remote proved another key, refused us, or the handshake failed; the message says which.</exception>
    /// <exception cref="PeerDisconnectedException">The remote could not be reached, or the handshake did not complete in time.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired.</exception>
    Task<IPeer> ConnectAsync(IPEndPoint remote, ReadOnlyMemory<byte> expectedKey, CancellationToken cancellationToken = default);

    /// <summary>
    /// Hole punching: sends a few small datagrams (about one second's worth) from this transport's socket to
    /// <paramref name="target"/>, so a NAT in front of us maps our socket toward it and lets its packets in — a peer's
    /// connection (the peer is the target) or a relay's forwarded datagrams (the relay is the target). The datagrams carry
    /// nothing and are dropped on arrival. Completes when the last one is queued.
    /// </summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired.</exception>
    Task PunchAsync(IPEndPoint target, CancellationToken cancellationToken = default);
}

/// <summary>A connected, authenticated remote transport.</summary>
public interface IPeer
{
    /// <summary>Local id of the connection (unique among current connections of this transport).</summary>
    int Id { get; }

    /// <summary>The remote's address.</summary>
    IPEndPoint RemoteEndPoint { get; }

    /// <summary>The static public key the remote proved in the handshake: its identity (empty only when encryption is off, in benchmarks).</summary>
    ReadOnlyMemory<byte> RemoteKey { get; }

    /// <summary>The short name of <see cref="RemoteKey"/> for logs (<see cref="PeerKey.Fingerprint"/>), or <c>unauthenticated</c>.</summary>
    string RemoteFingerprint { get; }

    /// <summary>True until the connection ends.</summary>
    bool IsConnected { get; }

    /// <summary>Round-trip time last measured by the transport's pings.</summary>
    TimeSpan RoundTripTime { get; }

    /// <summary>Cancelled when the connection ends, so callers can tie work to the peer's lifetime.</summary>
    CancellationToken Disconnected { get; }

    /// <summary>Why the connection ended; null while connected.</summary>
    string? DisconnectReason { get; }

    /// <summary>
    /// Sends without waiting for a reply (fire-and-forget; delivery is still reliable). Assigns a message id when
    /// <see cref="Envelope.MessageId"/> is 0. The payload is queued on return; the call does not wait for the network.
    /// </summary>
    /// <returns>The message id used.</returns>
    /// <exception cref="ArgumentException">The envelope is invalid or too large.</exception>
    /// <exception cref="PeerDisconnectedException">The peer is not connected.</exception>
    long Send(Envelope envelope);

    /// <summary>
    /// Sends a request and waits for the envelope whose <see cref="Envelope.CorrelationId"/> equals its message id
    /// (whatever its kind: an <see cref="ErrorReply"/> is returned, not thrown).
    /// </summary>
    /// <exception cref="TimeoutException">No reply within <paramref name="timeout"/>.</exception>
    /// <exception cref="PeerDisconnectedException">The peer disconnected before replying (fails at once, not at the timeout).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired.</exception>
    Task<Envelope> RequestAsync(Envelope request, TimeSpan timeout, CancellationToken cancellationToken = default);

    /// <summary>Closes the connection (the remote sees a disconnect with <paramref name="reason"/> in our log only).</summary>
    void Disconnect(string reason);
}

/// <summary>A message received from a peer.</summary>
/// <param name="Peer">The sender.</param>
/// <param name="Envelope">The validated message.</param>
public readonly record struct InboundMessage(IPeer Peer, Envelope Envelope);

/// <summary>A peer went away (or could not be reached) before the operation completed.</summary>
public class PeerDisconnectedException : IOException
{
    /// <summary>Creates the exception.</summary>
    public PeerDisconnectedException(string message) : base(message) { }
}

/// <summary>The remote transport refused our connection; <see cref="Exception.Message"/> carries its reason.</summary>
public sealed class PeerRefusedException : PeerDisconnectedException
{
    /// <summary>Creates the exception.</summary>
    public PeerRefusedException(string message) : base(message) { }
}

/// <summary>Monotonic counters of a transport (read with relaxed consistency).</summary>
public sealed class TransportCounters
{
    internal long _messagesReceived, _messagesSent, _malformed, _droppedFull, _droppedReassembly, _refusedConnections, _bytesReceived, _bytesSent;
    internal long _rateLimited, _handshakesEstablished, _handshakesFailed, _handshakesTimedOut;

    /// <summary>Valid messages received.</summary>
    public long MessagesReceived => Interlocked.Read(ref _messagesReceived);
    /// <summary>Messages sent.</summary>
    public long MessagesSent => Interlocked.Read(ref _messagesSent);
    /// <summary>Malformed frames or messages dropped.</summary>
    public long Malformed => Interlocked.Read(ref _malformed);
    /// <summary>Messages dropped because <see cref="ITransport.Inbound"/> was full.</summary>
    public long DroppedInboundFull => Interlocked.Read(ref _droppedFull);
    /// <summary>Partial messages dropped (reassembly memory budget exceeded or stalled past the timeout).</summary>
    public long DroppedReassembly => Interlocked.Read(ref _droppedReassembly);
    /// <summary>
    /// Connection attempts made to us that did not succeed, for any reason: malformed or wrong-version requests, attempts
    /// over the per-address rate limit or the pending-handshake cap, and handshakes that failed, timed out or were
    /// abandoned by the initiator.
    /// </summary>
    public long RefusedConnections => Interlocked.Read(ref _refusedConnections);
    /// <summary>Connection attempts dropped unanswered because their source address exceeded its rate, or too many handshakes were pending (part of <see cref="RefusedConnections"/>).</summary>
    public long RateLimitedConnections => Interlocked.Read(ref _rateLimited);
    /// <summary>Handshakes completed (either direction).</summary>
    public long HandshakesEstablished => Interlocked.Read(ref _handshakesEstablished);
    /// <summary>Handshakes that failed: wrong or missing secret, a key not pinned or not vouched for, altered or replayed handshake messages (either direction).</summary>
    public long HandshakesFailed => Interlocked.Read(ref _handshakesFailed);
    /// <summary>Handshakes that did not complete within <see cref="TransportOptions.HandshakeTimeout"/> (either direction).</summary>
    public long HandshakesTimedOut => Interlocked.Read(ref _handshakesTimedOut);
    /// <summary>The record layer's counters over every channel of the transport: records sealed, opened, and dropped by reason.</summary>
    public SecureChannelCounters Records { get; } = new();
    /// <summary>Payload bytes of complete messages received.</summary>
    public long BytesReceived => Interlocked.Read(ref _bytesReceived);
    /// <summary>Payload bytes of messages sent.</summary>
    public long BytesSent => Interlocked.Read(ref _bytesSent);
}
