using System.Collections.Concurrent;
using System.Net;
using LiteNetLib;
using Swarm.Protocol;
using Swarm.Transport.Security;

namespace Swarm.Transport;

/// <summary>
/// One connection of a <see cref="LiteNetTransport"/>: its LiteNetLib peer, where it stands (UDP connecting →
/// authenticating → connected → closed), its handshake and then its secure channel, and the requests waiting for
/// replies. State changes happen on the transport's poll thread; the rest is thread-safe.
/// </summary>
internal sealed class TransportPeer : IPeer
{
    private const int Connecting = 0, Authenticating = 1, Connected = 2, Closed = 3;

    private readonly LiteNetTransport _owner;
    private readonly CancellationTokenSource _disconnected = new();
    private volatile int _state;
    private volatile string? _reason;
    private volatile SecureChannel? _channel;
    private int _nextTransfer;
    private int _dirty;
    private int _channelOffset;

    public TransportPeer(LiteNetTransport owner, NetPeer net, bool inbound)
    {
        _owner = owner;
        Net = net;
        IsInbound = inbound;
        RemoteEndPoint = new IPEndPoint(net.Address, net.Port);
    }

    public NetPeer Net { get; }

    /// <summary>True when the remote connected to us (we are the handshake's responder).</summary>
    public bool IsInbound { get; }

    public ConcurrentDictionary<long, TaskCompletionSource<Envelope>> Pending { get; } = new();

    /// <summary>Callers of ConnectAsync waiting for this connection, with the key each expects (poll thread only).</summary>
    public List<(TaskCompletionSource<IPeer> Waiter, ReadOnlyMemory<byte> ExpectedKey)> ConnectWaiters { get; } = [];

    /// <summary>The handshake in progress (poll thread only); null before it starts, after it ended, and without encryption.</summary>
    public SecureHandshake? Handshake { get; set; }

    /// <summary>When the handshake must have completed (a <see cref="TimeProvider"/> timestamp); set when it starts.</summary>
    public long HandshakeDeadline { get; set; }

    /// <summary>Records that completed before this side's channel was established (poll thread only; their budget is still held).</summary>
    public List<byte[]> EarlyRecords { get; } = [];

    /// <summary>The channel after the handshake; null before, and always without encryption.</summary>
    public SecureChannel? Channel => _channel;

    public string? LocalCloseReason { get; private set; }

    public int Id => Net.Id;
    public IPEndPoint RemoteEndPoint { get; }
    public ReadOnlyMemory<byte> RemoteKey => _channel?.RemoteStaticKey ?? ReadOnlyMemory<byte>.Empty;
    public string RemoteFingerprint => _channel?.RemoteFingerprint ?? "unauthenticated";
    public bool IsConnected => _state == Connected;
    public bool IsAuthenticating => _state == Authenticating;
    public bool IsClosed => _state == Closed;
    public TimeSpan RoundTripTime => TimeSpan.FromMilliseconds(Net.RoundTripTime);
    public CancellationToken Disconnected => _disconnected.Token;
    public string? DisconnectReason => _reason;

    public long Send(Envelope envelope)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        return _owner.Send(this, envelope);
    }

    public async Task<Envelope> RequestAsync(Envelope request, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(timeout, TimeSpan.Zero);
        if (request.MessageId == 0) request = request with { MessageId = _owner.NextMessageId() };
        long id = request.MessageId;
        string what = $"{request.Body.GetType().Name} #{id} to {RemoteEndPoint}";
        var tcs = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!Pending.TryAdd(id, tcs)) throw new ArgumentException($"message id {id} is already awaiting a reply", nameof(request));
        using var timeoutCts = new CancellationTokenSource(timeout);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeoutCts.Token, cancellationToken);
        using var reg = linked.Token.Register(() =>
        {
            if (!Pending.TryRemove(id, out _)) return;
            if (cancellationToken.IsCancellationRequested) tcs.TrySetCanceled(cancellationToken);
            else tcs.TrySetException(new TimeoutException($"no reply to {what} within {timeout.TotalMilliseconds:0} ms"));
        });
        try
        {
            Send(request);
        }
        catch
        {
            Pending.TryRemove(id, out _);
            throw;
        }
        if (!IsConnected && Pending.TryRemove(id, out _))
            throw new PeerDisconnectedException($"peer {RemoteEndPoint} disconnected before replying to {what}: {DisconnectReason}");
        return await tcs.Task.ConfigureAwait(false);
    }

    public void Disconnect(string reason)
    {
        LocalCloseReason = $"closed locally: {reason}";
        _owner.DisconnectLater(this);
    }

    /// <summary>Puts what this peer has queued in LiteNetLib on the wire (<see cref="ManualNetDriver"/>).</summary>
    internal void Flush() => _owner.Flush(this);

    /// <summary>True when this call marked the peer as waiting for a flush (it was not yet).</summary>
    internal bool TryMarkDirty() => Interlocked.Exchange(ref _dirty, 1) == 0;

    /// <summary>The peer is about to be flushed: a send from now on marks it again.</summary>
    internal void ClearDirty() => Interlocked.Exchange(ref _dirty, 0); // a full fence: the update's reads of the queues come after it

    internal uint NextTransfer() => (uint)Interlocked.Increment(ref _nextTransfer);

    internal int NextChannelOffset(int chunks) => (int)((uint)Interlocked.Add(ref _channelOffset, chunks) % 64u);

    internal bool TryCompleteRequest(Envelope reply) =>
        Pending.TryRemove(reply.CorrelationId, out var tcs) && tcs.TrySetResult(reply);

    /// <summary>The UDP connection is up; the handshake runs now.</summary>
    internal void MarkAuthenticating()
    {
        if (_state == Connecting) _state = Authenticating;
    }

    /// <summary>
    /// Authenticated (or connected, without encryption): surfaced to callers. A waiter that pinned another key than the
    /// one proven fails; the others get the peer.
    /// </summary>
    internal void MarkConnected(SecureChannel? channel)
    {
        if (_state is Connected or Closed) return;
        _channel = channel;
        _state = Connected;
        foreach (var (waiter, expected) in ConnectWaiters)
        {
            if (Mismatch(expected) is { } refusal) waiter.TrySetException(new PeerRefusedException(refusal));
            else waiter.TrySetResult(this);
        }
        ConnectWaiters.Clear();
    }

    /// <summary>Null when <paramref name="expected"/> is empty or equals the proven key, else why not.</summary>
    internal string? Mismatch(ReadOnlyMemory<byte> expected)
    {
        if (expected.IsEmpty || PeerKey.AreEqual(expected.Span, RemoteKey.Span)) return null;
        return $"{RemoteEndPoint} is {RemoteFingerprint}, not the expected {PeerKey.Fingerprint(expected.Span)}";
    }

    internal void MarkClosed(string reason, bool refused)
    {
        if (_state == Closed) return;
        _reason = reason;
        _state = Closed;
        Handshake?.Dispose();
        Handshake = null;
        _channel?.Dispose();
        foreach (var (waiter, _) in ConnectWaiters)
            waiter.TrySetException(refused ? new PeerRefusedException(reason) : new PeerDisconnectedException(reason));
        ConnectWaiters.Clear();
        foreach (var id in Pending.Keys.ToList())
            if (Pending.TryRemove(id, out var tcs))
                tcs.TrySetException(new PeerDisconnectedException($"peer {RemoteEndPoint} disconnected before replying to message #{id}: {reason}"));
        try { _disconnected.Cancel(); } catch (AggregateException) { /* callbacks' exceptions are theirs */ }
    }

    public override string ToString() => $"peer #{Id} {RemoteEndPoint}";
}
