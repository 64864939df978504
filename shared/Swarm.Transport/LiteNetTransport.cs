using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading.Channels;
using LiteNetLib;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Swarm.Protocol;

namespace Swarm.Transport;

/// <summary>
/// <see cref="ITransport"/> over LiteNetLib (reliable UDP).
/// </summary>
/// <remarks>
/// <para>Threads: LiteNetLib's own receive and logic threads, plus one poll thread of ours that runs
/// <c>NetManager.PollEvents</c> (connection requests, connects, disconnects — <c>UnsyncedEvents</c> is false), decodes
/// complete messages, completes pending requests and feeds <see cref="Inbound"/>. Packet payloads are copied out of the
/// <c>NetPacketReader</c> on LiteNetLib's receive thread (<c>UnsyncedReceiveEvent</c>) straight into the reassembly
/// buffer, so the reader is never used after it is recycled and no per-packet queue exists; the poll thread is woken
/// at once when a message completes, which keeps a hop on loopback well under a millisecond.</para>
/// <para>Large messages: LiteNetLib keeps at most 64 packets in flight per reliable channel, so a single channel
/// moves ~64 × MTU per round trip. Messages larger than one packet are cut into packet-sized chunks spread
/// round-robin over <see cref="TransportOptions.Channels"/> ReliableUnordered channels and reassembled by
/// (sender, transfer, chunk index).</para>
/// <para>Back-pressure policy: inbound memory is bounded by <see cref="TransportOptions.MaxPendingInboundBytes"/>
/// (partial and undecoded messages; a message that does not fit is dropped and logged — its sender's request times
/// out) and by <see cref="TransportOptions.InboundCapacity"/> (decoded messages; when full the newest message is
/// dropped, logged, counted, and answered with <see cref="ErrorReply"/>/<see cref="ErrorCode.Overloaded"/>). The poll
/// thread never blocks on a consumer. Outbound data is queued inside LiteNetLib; callers bound it themselves.</para>
/// </remarks>
public sealed partial class LiteNetTransport : ITransport
{
    private readonly TransportOptions _options;
    private readonly ILogger _logger;
    private readonly MessageCodec _codec;
    private readonly byte[] _key;
    private readonly EventBasedNetListener _listener = new();
    private readonly NetManager _manager;
    private readonly Thread _pollThread;
    private readonly AutoResetEvent _wake = new(false);
    private readonly ConcurrentQueue<Action> _commands = new();
    private readonly ConcurrentQueue<(PeerState Peer, byte[] Bytes)> _completed = new();
    private readonly ConcurrentDictionary<NetPeer, PeerState> _peers = new(ReferenceEqualityComparer.Instance);
    private readonly Channel<InboundMessage> _inbound;
    private readonly Reassembler _reassembly;
    private readonly TransportCounters _counters = new();
    private readonly RepeatedLogLimiter _repeated = new(); // warnings a peer can provoke at will: counted always, logged per interval
    private long _nextMessageId;
    private volatile bool _stopping;
    private int _disposed;

    private LiteNetTransport(TransportOptions options, ILogger logger)
    {
        _options = options;
        _logger = logger;
        _codec = new MessageCodec(options.MaxMessageBytes);
        _key = SwarmKey.Derive(options.Secret);
        _reassembly = new Reassembler(options.MaxPendingInboundBytes, options.MaxMessageBytes, options.ReassemblyTimeout);
        _inbound = Channel.CreateBounded<InboundMessage>(new BoundedChannelOptions(options.InboundCapacity)
        {
            FullMode = BoundedChannelFullMode.Wait, // TryWrite fails when full; the poll thread never waits
            SingleWriter = true,
        });
        _manager = new NetManager(_listener)
        {
            UnsyncedEvents = false,
            UnsyncedReceiveEvent = true,
            AutoRecycle = true,
            ChannelsCount = 64,
            UpdateTime = options.UpdateTimeMs,
            DisconnectTimeout = (int)options.DisconnectTimeout.TotalMilliseconds,
            IPv6Enabled = options.BindAddress.AddressFamily == AddressFamily.InterNetworkV6,
            MtuOverride = options.Mtu,
            ReconnectDelay = 250,
            MaxConnectAttempts = Math.Max(1, (int)Math.Ceiling(options.ConnectTimeout.TotalMilliseconds / 250)),
        };
        _listener.ConnectionRequestEvent += OnConnectionRequest;
        _listener.PeerConnectedEvent += OnPeerConnected;
        _listener.PeerDisconnectedEvent += OnPeerDisconnected;
        _listener.NetworkReceiveEvent += OnNetworkReceive;
        _listener.NetworkErrorEvent += (ep, err) => TransportLog.NetworkError(_logger, ep, err);
        _pollThread = new Thread(PollLoop) { IsBackground = true };
    }

    /// <summary>Binds the UDP port and starts the poll thread.</summary>
    /// <exception cref="ArgumentException">The options are invalid (all problems listed).</exception>
    /// <exception cref="SocketException">The port could not be bound.</exception>
    public static LiteNetTransport Start(TransportOptions options, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate();
        if (errors.Count > 0) throw new ArgumentException("invalid transport options: " + string.Join("; ", errors), nameof(options));
        var t = new LiteNetTransport(options, logger ?? NullLogger.Instance);
        LiteNetLibLog.Attach(t._logger);
        var v4 = options.BindAddress.AddressFamily == AddressFamily.InterNetwork ? options.BindAddress : IPAddress.Any;
        var v6 = options.BindAddress.AddressFamily == AddressFamily.InterNetworkV6 ? options.BindAddress : IPAddress.IPv6Any;
        if (!LiteNetLibLog.WhileBinding(() => t._manager.Start(v4, v6, options.Port)))
        {
            t._wake.Dispose();
            throw new SocketException((int)SocketError.AddressAlreadyInUse, $"could not bind UDP {options.BindAddress}:{options.Port}");
        }
        t.LocalEndPoint = new IPEndPoint(options.BindAddress, t._manager.LocalPort);
        t._pollThread.Name = $"swarm-transport:{t._manager.LocalPort}";
        t._pollThread.Start();
        TransportLog.Listening(t._logger, t.LocalEndPoint, options.Channels);
        return t;
    }

    /// <inheritdoc/>
    public IPEndPoint LocalEndPoint { get; private set; } = new(IPAddress.None, 0);

    /// <inheritdoc/>
    public ChannelReader<InboundMessage> Inbound => _inbound.Reader;

    /// <inheritdoc/>
    public event Action<IPeer>? PeerConnected;

    /// <inheritdoc/>
    public event Action<IPeer, string>? PeerDisconnected;

    /// <inheritdoc/>
    public IReadOnlyCollection<IPeer> Peers => _peers.Values.Where(p => p.IsConnected).ToArray();

    /// <inheritdoc/>
    public TransportCounters Counters => _counters;

    /// <summary>Bytes held by partial and undecoded inbound messages (for tests and diagnostics).</summary>
    internal long PendingInboundBytes => _reassembly.PendingBytes;

    /// <inheritdoc/>
    public async Task<IPeer> ConnectAsync(IPEndPoint remote, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(remote);
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var tcs = new TaskCompletionSource<IPeer>(TaskCreationOptions.RunContinuationsAsynchronously);
        Enqueue(() => StartConnect(remote, tcs));
        using var reg = cancellationToken.Register(() =>
        {
            if (tcs.TrySetCanceled(cancellationToken))
                Enqueue(() => AbandonConnect(remote));
        });
        return await tcs.Task.ConfigureAwait(false);
    }

    private void StartConnect(IPEndPoint remote, TaskCompletionSource<IPeer> tcs)
    {
        foreach (var p in _peers.Values)
        {
            if (!p.RemoteEndPoint.Equals(remote) || p.IsClosed) continue;
            if (p.IsConnected) tcs.TrySetResult(p);
            else p.ConnectWaiters.Add(tcs);
            return;
        }
        var net = _manager.Connect(remote, SwarmKey.BuildRequest(_key, _options.ProtocolVersion).AsSpan());
        if (net is null)
        {
            tcs.TrySetException(new PeerDisconnectedException($"could not start a connection to {remote} (a connection attempt is already in progress)"));
            return;
        }
        var state = _peers.GetOrAdd(net, n => new PeerState(this, n));
        if (state.IsConnected) tcs.TrySetResult(state);
        else state.ConnectWaiters.Add(tcs);
    }

    private void AbandonConnect(IPEndPoint remote)
    {
        foreach (var p in _peers.Values)
            if (p.RemoteEndPoint.Equals(remote) && !p.IsConnected && !p.IsClosed && p.ConnectWaiters.All(w => w.Task.IsCompleted))
                _manager.DisconnectPeer(p.Net);
    }

    private void Enqueue(Action command)
    {
        if (_disposed != 0) return; // nothing to do on a stopped transport
        _commands.Enqueue(command);
        _wake.Set();
    }

    // ---- LiteNetLib events -------------------------------------------------------------------

    private void OnConnectionRequest(ConnectionRequest request)
    {
        var reason = SwarmKey.Check(request.Data.GetRemainingBytesSpan(), _key, _options.ProtocolVersion);
        if (reason is not null)
        {
            Interlocked.Increment(ref _counters._refusedConnections);
            if (_repeated.ShouldLog(_logger, "refused connection")) TransportLog.Refused(_logger, request.RemoteEndPoint, reason);
            request.Reject(Encoding.UTF8.GetBytes(reason));
            return;
        }
        var net = request.Accept();
        if (net is not null) _peers.GetOrAdd(net, n => new PeerState(this, n));
    }

    private void OnPeerConnected(NetPeer net) => EnsureConnected(_peers.GetOrAdd(net, n => new PeerState(this, n)));

    /// <summary>Poll thread: marks a peer connected once and raises <see cref="PeerConnected"/> once.</summary>
    private void EnsureConnected(PeerState state)
    {
        if (state.IsConnected || state.IsClosed) return;
        state.MarkConnected();
        TransportLog.PeerConnected(_logger, state.RemoteEndPoint, state.Id);
        PeerConnected?.Invoke(state);
    }

    private void OnPeerDisconnected(NetPeer net, DisconnectInfo info)
    {
        if (!_peers.TryRemove(net, out var state)) return;
        var ep = state.RemoteEndPoint;
        string reason;
        bool refused = false;
        switch (info.Reason)
        {
            case LiteNetLib.DisconnectReason.ConnectionRejected:
                refused = true;
                var why = info.AdditionalData is { AvailableBytes: > 0 } data ? Encoding.UTF8.GetString(data.GetRemainingBytesSpan()) : "no reason given";
                reason = $"{ep} refused the connection: {why}";
                break;
            case LiteNetLib.DisconnectReason.ConnectionFailed:
                reason = $"no answer from {ep} within {_options.ConnectTimeout.TotalMilliseconds:0} ms";
                break;
            case LiteNetLib.DisconnectReason.Timeout:
                reason = $"no packets from {ep} for {_options.DisconnectTimeout.TotalMilliseconds:0} ms";
                break;
            case LiteNetLib.DisconnectReason.RemoteConnectionClose:
                reason = $"{ep} closed the connection";
                break;
            case LiteNetLib.DisconnectReason.DisconnectPeerCalled:
                reason = state.LocalCloseReason ?? "closed locally";
                break;
            default:
                reason = $"{info.Reason} ({info.SocketErrorCode})";
                break;
        }
        bool wasConnected = state.IsConnected;
        state.MarkClosed(reason, refused);
        _reassembly.RemovePeer(state);
        if (wasConnected)
        {
            TransportLog.PeerDisconnected(_logger, ep, reason);
            PeerDisconnected?.Invoke(state, reason);
        }
        else
        {
            if (_repeated.ShouldLog(_logger, "failed connect")) TransportLog.ConnectFailed(_logger, ep, reason);
        }
    }

    // Runs on LiteNetLib's receive thread: copy the payload out before the reader is recycled.
    private void OnNetworkReceive(NetPeer net, NetPacketReader reader, byte channel, DeliveryMethod method)
    {
        // A peer may send as soon as our Accept() reached it — before the poll thread has recorded the accepted
        // peer. Its first messages must not be dropped (they were acknowledged and would never be resent).
        if (!_peers.TryGetValue(net, out var state))
        {
            if (net.ConnectionState != ConnectionState.Connected) return;
            state = _peers.GetOrAdd(net, n => new PeerState(this, n));
        }
        var result = _reassembly.Accept(state, reader.GetRemainingBytesSpan(), out var message, out var error);
        switch (result)
        {
            case FrameResult.Complete:
                _completed.Enqueue((state, message!));
                _wake.Set();
                break;
            case FrameResult.Malformed:
                Interlocked.Increment(ref _counters._malformed);
                if (_repeated.ShouldLog(_logger, "malformed message")) TransportLog.Malformed(_logger, state.RemoteEndPoint, error!);
                break;
            case FrameResult.Dropped:
                Interlocked.Increment(ref _counters._droppedReassembly);
                if (_repeated.ShouldLog(_logger, "dropped message")) TransportLog.ReassemblyDropped(_logger, state.RemoteEndPoint, error!);
                break;
        }
        _manager.TriggerUpdate(); // acknowledge promptly: the sender's window depends on it
    }

    // ---- poll thread --------------------------------------------------------------------------

    private void PollLoop()
    {
        long lastSweep = Environment.TickCount64;
        while (!_stopping)
        {
            try
            {
                _wake.WaitOne(5);
                while (_commands.TryDequeue(out var command)) command();
                DrainCompleted();
                _manager.PollEvents();
                DrainCompleted();
                if (Environment.TickCount64 - lastSweep > 250)
                {
                    lastSweep = Environment.TickCount64;
                    foreach (var dropped in _reassembly.Sweep())
                    {
                        Interlocked.Increment(ref _counters._droppedReassembly);
                        if (_repeated.ShouldLog(_logger, "dropped message")) TransportLog.ReassemblyDropped(_logger, LocalEndPoint, "stalled " + dropped);
                    }
                }
            }
            catch (Exception ex)
            {
                TransportLog.PollError(_logger, ex);
            }
        }
    }

    private void DrainCompleted()
    {
        while (_completed.TryDequeue(out var item))
        {
            var (peer, bytes) = item;
            try
            {
                Dispatch(peer, bytes);
            }
            finally
            {
                _reassembly.Release(bytes.Length);
            }
        }
    }

    private void Dispatch(PeerState peer, byte[] bytes)
    {
        if (!peer.IsConnected && !peer.IsClosed && peer.Net.ConnectionState == ConnectionState.Connected) EnsureConnected(peer); // its Connected event is still queued
        if (!_codec.TryDeserialize(bytes, out var envelope, out var error))
        {
            Interlocked.Increment(ref _counters._malformed);
            if (_repeated.ShouldLog(_logger, "malformed message")) TransportLog.Malformed(_logger, peer.RemoteEndPoint, error);
            return;
        }
        Interlocked.Increment(ref _counters._messagesReceived);
        Interlocked.Add(ref _counters._bytesReceived, bytes.Length);
        if (envelope.CorrelationId != 0 && peer.TryCompleteRequest(envelope)) return;
        if (_inbound.Writer.TryWrite(new InboundMessage(peer, envelope))) return;

        Interlocked.Increment(ref _counters._droppedFull);
        if (_repeated.ShouldLog(_logger, "inbound queue full")) TransportLog.InboundFull(_logger, _options.InboundCapacity, envelope.Body.GetType().Name, envelope.MessageId, peer.RemoteEndPoint);
        if (envelope.Body is not ErrorReply && peer.IsConnected)
        {
            try
            {
                Send(peer, envelope.CreateReply(new ErrorReply { Code = ErrorCode.Overloaded, Message = $"{LocalEndPoint} is overloaded: inbound queue full, {envelope.Body.GetType().Name} #{envelope.MessageId} dropped" }));
            }
            catch (PeerDisconnectedException)
            {
                // gone meanwhile; nothing to tell
            }
        }
    }

    // ---- disposal -----------------------------------------------------------------------------

    /// <summary>Disconnects every peer (they see a close), stops the threads, releases the port, fails pending requests and completes <see cref="Inbound"/>.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _stopping = true;
        _wake.Set();
        await Task.Run(() => _pollThread.Join()).ConfigureAwait(false);
        await Task.Run(() => _manager.Stop(sendDisconnectMessages: true)).ConfigureAwait(false);
        foreach (var state in _peers.Values) state.MarkClosed("transport disposed", refused: false);
        _peers.Clear();
        while (_completed.TryDequeue(out var item)) _reassembly.Release(item.Bytes.Length);
        _inbound.Writer.TryComplete();
        _wake.Dispose();
    }

    /// <summary>Stops without telling peers (they notice only by timeout) — simulates a crash in tests.</summary>
    internal async Task CrashAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _stopping = true;
        _wake.Set();
        await Task.Run(() => _pollThread.Join()).ConfigureAwait(false);
        await Task.Run(() => _manager.Stop(sendDisconnectMessages: false)).ConfigureAwait(false);
        foreach (var state in _peers.Values) state.MarkClosed("transport crashed", refused: false);
        _inbound.Writer.TryComplete();
        _wake.Dispose();
    }

}
