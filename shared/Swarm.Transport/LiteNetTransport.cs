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
using Swarm.Transport.Security;

namespace Swarm.Transport;

/// <summary>
/// <see cref="ITransport"/> over LiteNetLib (reliable UDP), with a Noise secure channel on every connection.
/// </summary>
/// <remarks>
/// <para>Threads: one poll thread of ours; LiteNetLib runs in manual mode under <see cref="ManualNetDriver"/>. The poll
/// thread waits on the socket, receives (LiteNetLib raises requests, connects, disconnects and receipts inline; payloads
/// are copied out of its reader straight into the reassembly buffer), drives the handshakes, opens records, decodes
/// messages, completes pending requests, feeds <see cref="Inbound"/> and runs LiteNetLib's clock tick. A message sent
/// from any thread is put on the wire by that thread when the manager is free (else by the poll thread at the end of
/// its round), and only its own peer is flushed: a message costs the same with 1,000 peers as with one, and a hop on
/// loopback stays well under a millisecond.</para>
/// <para>Connecting: the request carries only the protocol version (<see cref="ConnectRequest"/>); requests over the
/// per-address rate are dropped unanswered (<see cref="ConnectionAdmission"/>). Then the Noise handshake runs over the
/// connection (<see cref="PeerAuthenticator"/>), bounded by <see cref="TransportOptions.HandshakeTimeout"/>; only then is
/// the peer surfaced.</para>
/// <para>Messages: each is sealed whole into one record of the peer's <see cref="SecureChannel"/>, then framed
/// (<see cref="Framing"/>: one packet, or chunks over up to 64 ReliableUnordered channels) and opened once
/// reassembled. One AEAD per message keeps the overhead at 29 bytes per message, not per packet, the replay window
/// counting messages, and the application never sees part of a message. Records that fail to open are dropped and
/// counted. LiteNetLib has acknowledged a record's packets before it is opened, so an altered record is lost, not
/// resent: the layer above recovers as from any lost message (the coordinator's step timeout).</para>
/// <para>Back-pressure: inbound memory is bounded by <see cref="TransportOptions.MaxPendingInboundBytes"/> (partial and
/// undecoded messages; one that does not fit is dropped and logged) and by <see cref="TransportOptions.InboundCapacity"/>
/// (decoded messages; when full the newest is dropped, counted, and answered with <see cref="ErrorCode.Overloaded"/>).
/// The poll thread never blocks on a consumer. Outbound data is queued inside LiteNetLib.</para>
/// </remarks>
public sealed partial class LiteNetTransport : ITransport
{
    private readonly TransportOptions _options;
    private readonly ILogger _logger;
    private readonly MessageCodec _codec;
    private readonly EventBasedNetListener _listener = new();
    private readonly NetManager _manager;
    private readonly ManualNetDriver _driver;
    private readonly Thread? _pollThread; // null when a TransportPump runs the rounds
    private readonly TaskCompletionSource _pumpReleased = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _lastSweep = Environment.TickCount64;
    private readonly ConcurrentQueue<Action> _commands = new();
    private readonly ConcurrentDictionary<NetPeer, TransportPeer> _peers = new(ReferenceEqualityComparer.Instance);
    private readonly Channel<InboundMessage> _inbound;
    private readonly Reassembler _reassembly;
    private readonly TransportCounters _counters = new();
    private readonly ConnectionAdmission _admission;
    private readonly TransportDiagnostics _diagnostics;
    private readonly PeerAuthenticator? _auth; // null: encryption off (benchmarks and tests only)
    private readonly InboundDispatcher _dispatcher;
    private long _nextMessageId;
    private volatile bool _stopping;
    private int _disposed;

    private LiteNetTransport(TransportOptions options, ILogger logger)
    {
        _options = options;
        _logger = logger;
        _codec = new MessageCodec(options.MaxMessageBytes);
        _admission = new ConnectionAdmission(options);
        _diagnostics = new TransportDiagnostics(logger, _counters);
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
            ReconnectDelay = 250, UnconnectedMessagesEnabled = true, // NAT probes and punches (LiteNetTransport.Nat.cs)
            MaxConnectAttempts = Math.Max(1, (int)Math.Ceiling(options.ConnectTimeout.TotalMilliseconds / 250)),
        };
        _driver = new ManualNetDriver(_manager, options.Time, options.UpdateTimeMs);
        _auth = options.Encrypt
            ? new PeerAuthenticator(options, _counters, _diagnostics, (peer, reason) => _manager.DisconnectPeer(peer.Net, reason), EnsureConnected)
            : null;
        _dispatcher = new InboundDispatcher(options, _codec, _reassembly, _counters, _diagnostics, _auth, _inbound.Writer,
            peer => EnsureConnected(peer, channel: null), () => LocalEndPoint);
        _listener.ConnectionRequestEvent += OnConnectionRequest;
        _listener.PeerConnectedEvent += OnPeerConnected;
        _listener.PeerDisconnectedEvent += OnPeerDisconnected;
        _listener.NetworkReceiveEvent += OnNetworkReceive;
        _listener.NetworkErrorEvent += (ep, err) => TransportLog.NetworkError(_logger, ep, err);
        _listener.NetworkReceiveUnconnectedEvent += OnNatSignal;
        if (options.Pump is null) _pollThread = new Thread(PollLoop) { IsBackground = true };
    }

    /// <summary>Binds the UDP port and starts the poll thread (or joins <see cref="TransportOptions.Pump"/>).</summary>
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
        if (!LiteNetLibLog.WhileBinding(() => t._manager.StartInManualMode(v4, v6, options.Port)))
        {
            t._auth?.Dispose();
            throw new SocketException((int)SocketError.AddressAlreadyInUse, $"could not bind UDP {options.BindAddress}:{options.Port}");
        }
        t._driver.StopBlocking();
        t.LocalEndPoint = new IPEndPoint(options.BindAddress, t._manager.LocalPort);
        if (t._pollThread is { } thread)
        {
            thread.Name = $"swarm-transport:{t._manager.LocalPort}";
            thread.Start();
        }
        else options.Pump!.Add(t);
        TransportLog.Listening(t._logger, t.LocalEndPoint, options.Channels);
        if (t._auth is { } auth) TransportLog.Identity(t._logger, auth.LocalFingerprint, auth.ProtocolName);
        return t;
    }

    /// <inheritdoc/>
    public IPEndPoint LocalEndPoint { get; private set; } = new(IPAddress.None, 0);

    /// <inheritdoc/>
    public ReadOnlyMemory<byte> LocalKey => _auth?.LocalKey ?? ReadOnlyMemory<byte>.Empty;

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

    /// <summary>How LiteNetLib is driven: its flushes and ticks, for tests.</summary>
    internal ManualNetDriver Driver => _driver;

    private void Enqueue(Action command)
    {
        if (_disposed != 0) return; // nothing to do on a stopped transport
        _commands.Enqueue(command); _driver.Wake();
    }

    /// <summary>Puts what <paramref name="peer"/> has queued (messages, handshake frames) on the wire (see <see cref="ManualNetDriver"/>).</summary>
    internal void Flush(TransportPeer peer) => _driver.Flush(peer);

    /// <summary>Closes <paramref name="peer"/>'s connection from the poll thread.</summary>
    internal void DisconnectLater(TransportPeer peer) => Enqueue(() => _manager.DisconnectPeer(peer.Net));

    // ---- LiteNetLib events (poll thread, but OnNetworkReceive) ----------------------------------

    private void OnConnectionRequest(ConnectionRequest request)
    {
        int pending = _peers.Values.Count(p => p.IsAuthenticating);
        var verdict = _admission.Decide(request.RemoteEndPoint, request.Data.GetRemainingBytesSpan(), pending, out var reason);
        if (verdict != AdmissionVerdict.Accept)
        {
            bool drop = verdict == AdmissionVerdict.Drop;
            _diagnostics.Refused(request.RemoteEndPoint, drop, drop ? "dropped unanswered" : "request", reason);
            if (drop) request.RejectForce();
            else request.Reject(Encoding.UTF8.GetBytes(reason));
            return;
        }
        var net = request.Accept();
        if (net is null) return;
        var state = _peers.GetOrAdd(net, n => new TransportPeer(this, n, inbound: true));
        _auth?.BeginInbound(state);
    }

    private void OnPeerConnected(NetPeer net)
    {
        var state = _peers.GetOrAdd(net, n => new TransportPeer(this, n, inbound: true));
        if (_auth is null) EnsureConnected(state, channel: null);
        else if (!state.IsInbound) _auth.StartOutbound(state);
    }

    /// <summary>Poll thread: marks a peer connected once, raises <see cref="PeerConnected"/> once, then delivers records that overtook the handshake.</summary>
    private void EnsureConnected(TransportPeer state, SecureChannel? channel)
    {
        if (state.IsConnected || state.IsClosed) return;
        state.MarkConnected(channel);
        if (channel is null) TransportLog.PeerConnected(_logger, state.RemoteEndPoint, state.Id);
        else TransportLog.PeerAuthenticated(_logger, state.RemoteEndPoint, channel.RemoteFingerprint, channel.ProtocolName, state.Id);
        PeerConnected?.Invoke(state);
        _dispatcher.DeliverEarlyRecords(state);
    }

    private void OnPeerDisconnected(NetPeer net, DisconnectInfo info)
    {
        if (!_peers.TryRemove(net, out var state)) return;
        _reassembly.RemovePeer(state);
        _dispatcher.ReleaseEarlyRecords(state);
        if (state.IsClosed) return; // we closed it (a failed handshake) and have said why
        var (reason, refused) = DisconnectReasons.Describe(state, info, _options);
        bool wasConnected = state.IsConnected, authenticating = state.IsAuthenticating;
        state.MarkClosed(reason, refused);
        if (wasConnected)
        {
            TransportLog.PeerDisconnected(_logger, state.RemoteEndPoint, reason);
            PeerDisconnected?.Invoke(state, reason);
            return;
        }
        if (authenticating) Interlocked.Increment(ref _counters._handshakesFailed);
        _diagnostics.ConnectFailed(state.RemoteEndPoint, state.IsInbound && authenticating, reason);
    }

    // Poll thread, inside LiteNetLib's receive: copy the payload out before the reader is recycled.
    private void OnNetworkReceive(NetPeer net, NetPacketReader reader, byte channel, DeliveryMethod method)
    {
        // A peer may send as soon as our Accept() reached it — before the poll thread has recorded the accepted
        // peer. Its first messages must not be dropped (they were acknowledged and would never be resent).
        if (!_peers.TryGetValue(net, out var state))
        {
            if (net.ConnectionState != ConnectionState.Connected) return;
            state = _peers.GetOrAdd(net, n => new TransportPeer(this, n, inbound: true));
        }
        var frame = reader.GetRemainingBytesSpan();
        if (!frame.IsEmpty && frame[0] == Framing.Handshake)
        {
            if (frame.Length - 1 > Framing.MaxHandshakeFrame) _diagnostics.Malformed(state.RemoteEndPoint, $"handshake frame of {frame.Length - 1} bytes (limit {Framing.MaxHandshakeFrame})");
            else _dispatcher.AddHandshakeFrame(state, frame[1..].ToArray());
        }
        else switch (_reassembly.Accept(state, frame, out var message, out var error))
        {
            case FrameResult.Complete:
                _dispatcher.AddMessage(state, message!);
                break;
            case FrameResult.Malformed:
                _diagnostics.Malformed(state.RemoteEndPoint, error!);
                break;
            case FrameResult.Dropped:
                _diagnostics.ReassemblyDropped(state.RemoteEndPoint, error!);
                break;
        }
        _driver.Flush(state); // acknowledge at the end of the round: the sender's window depends on it
    }

    // ---- poll thread --------------------------------------------------------------------------

    private void PollLoop()
    {
        while (!_stopping)
            RunRound(_driver.WaitForDatagram(_driver.MillisecondsToTick(_options.PollIntervalMs)));
    }

    /// <summary>The poll thread's (or the pump's) round: commands, receipts, decoding, the tick, sweeps, then the flush.</summary>
    /// <param name="readable">A datagram is waiting on the socket.</param>
    internal void RunRound(bool readable)
    {
        try
        {
            lock (_driver.Gate)
            {
                _driver.TakeWake();
                while (_commands.TryDequeue(out var command)) command();
                if (readable) _driver.Receive();
                _dispatcher.Drain();
                _driver.TickIfDue();
                if (Environment.TickCount64 - _lastSweep > 100)
                {
                    _lastSweep = Environment.TickCount64;
                    Sweep();
                }
                _driver.FlushDirty();
            }
            _driver.FlushIfFree();
        }
        catch (Exception ex)
        {
            TransportLog.PollError(_logger, ex);
        }
    }

    /// <summary>True once the transport is stopping: its pump lets it go (<see cref="ReleasedByPump"/>).</summary>
    internal bool IsStopping => _stopping;

    /// <summary>The pump runs no more rounds of this transport.</summary>
    internal void ReleasedByPump() => _pumpReleased.TrySetResult();

    private void Sweep()
    {
        foreach (var dropped in _reassembly.Sweep()) _diagnostics.ReassemblyDropped(LocalEndPoint, "stalled " + dropped);
        _admission.Sweep();
        _auth?.EndExpired(_peers.Values);
    }

    // ---- sending ------------------------------------------------------------------------------

    internal long NextMessageId() => Interlocked.Increment(ref _nextMessageId);

    internal long Send(TransportPeer peer, Envelope envelope)
    {
        if (!peer.IsConnected)
            throw new PeerDisconnectedException($"peer {peer.RemoteEndPoint} is not connected ({peer.DisconnectReason ?? "still connecting"})");
        if (envelope.MessageId == 0) envelope = envelope with { MessageId = NextMessageId() };
        var bytes = _codec.Serialize(envelope);
        if (peer.Channel is not { } channel) SendPayload(peer, bytes);
        else
        {
            int length = bytes.Length + SecureChannel.Overhead;
            var record = ArrayPool<byte>.Shared.Rent(length);
            try
            {
                channel.Seal(bytes, record.AsSpan(0, length));
                SendPayload(peer, record.AsSpan(0, length));
            }
            catch (ObjectDisposedException) // closed meanwhile: the channel's keys are gone
            {
                throw new PeerDisconnectedException($"peer {peer.RemoteEndPoint} is not connected ({peer.DisconnectReason ?? "closed"})");
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(record);
            }
        }
        Interlocked.Increment(ref _counters._messagesSent);
        Interlocked.Add(ref _counters._bytesSent, bytes.Length);
        return envelope.MessageId;
    }

    /// <summary>Frames and queues raw payload bytes (no codec, no record) — the tests use it to inject malformed messages.</summary>
    internal void SendPayload(TransportPeer peer, ReadOnlySpan<byte> payload)
    {
        Framing.SendMessage(peer, payload, _options.Channels);
        _driver.Flush(peer);
    }

    /// <summary>Disconnects every peer (they see a close), stops the threads, releases the port, fails pending requests and completes <see cref="Inbound"/>.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        await StopAsync(sendDisconnectMessages: true, "transport disposed").ConfigureAwait(false);
    }

    /// <summary>Stops without telling peers (they notice only by timeout) — simulates a crash in tests.</summary>
    internal async Task CrashAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        await StopAsync(sendDisconnectMessages: false, "transport crashed").ConfigureAwait(false);
    }

    private async Task StopAsync(bool sendDisconnectMessages, string reason)
    {
        _stopping = true;
        _driver.Wake();
        if (_pollThread is { } thread) await Task.Run(thread.Join).ConfigureAwait(false);
        else await _pumpReleased.Task.ConfigureAwait(false);
        await Task.Run(() => { lock (_driver.Gate) _manager.Stop(sendDisconnectMessages); }).ConfigureAwait(false);
        foreach (var state in _peers.Values) state.MarkClosed(reason, refused: false);
        _peers.Clear();
        _dispatcher.Clear();
        _inbound.Writer.TryComplete();
        _auth?.Dispose();
    }
}
