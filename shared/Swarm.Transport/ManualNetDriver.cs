using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using LiteNetLib;

namespace Swarm.Transport;

/// <summary>
/// Runs a LiteNetLib <see cref="NetManager"/> started in manual mode (no threads of its own) so that a message costs work
/// on its own peer only, whatever the number of peers.
/// </summary>
/// <remarks>
/// <para>Why: LiteNetLib puts a packet on the wire only when it updates the packet's peer, and its threaded mode updates
/// every peer on each wake. Waking it per message (for latency) made every message cost O(peers): at 1,000 peers the
/// coordinator's logic thread spent its time flushing, pinging and checking idle peers. LiteNetLib 2.1 has no public
/// per-peer flush, so this class calls its per-peer update (internal; reached through <see cref="UnsafeAccessorAttribute"/>,
/// pinned by the package version and by <c>ManualNetDriverTests</c>) with no time elapsed, which only sends what is queued.</para>
/// <para>How: a send or a receipt marks its peer dirty; dirty peers alone are flushed — by the sending thread when the
/// manager is free, else by the thread holding it before it lets go. The full update of every peer (resends, pings,
/// timeouts, MTU probes) runs on the clock only, every <see cref="TransportOptions.UpdateTimeMs"/>. The owner's poll
/// thread waits on the socket itself and receives on it. Every call into the manager but <c>NetPeer.Send</c>
/// (thread-safe in LiteNetLib) is made under <see cref="Gate"/>.</para>
/// </remarks>
internal sealed class ManualNetDriver
{
    private const int MaxEmptyDatagramsPerRound = 64;

    /// <summary>Peers per step of the tick's stretch (see <see cref="Tick"/>).</summary>
    internal const int PeersPerTickStep = 250;

    /// <summary>The most the tick is stretched: 4 × the configured one.</summary>
    internal const int MaxTickStretch = 4;

    private readonly NetManager _manager;
    private readonly TimeProvider _time;
    private readonly TimeSpan _tick;
    private readonly ConcurrentQueue<TransportPeer> _dirty = new();
    private readonly byte[] _discard = new byte[1];
    private readonly List<Socket> _selectList = new(2);
    private long _lastTick;
    private int _wakeRequested;
    private long _flushes, _ticks;

    public ManualNetDriver(NetManager manager, TimeProvider time, int tickMs)
    {
        _manager = manager;
        _time = time;
        _tick = TimeSpan.FromMilliseconds(tickMs);
        _lastTick = time.GetTimestamp();
    }

    /// <summary>Held around every call into the manager (but sends); the poll thread holds it for a whole round.</summary>
    public object Gate { get; } = new();

    /// <summary>Peer flushes so far: single-peer updates that sent what a message (or its acknowledgement) queued.</summary>
    public long Flushes => Interlocked.Read(ref _flushes);

    /// <summary>Full updates of every peer so far (the clock's ticks).</summary>
    public long Ticks => Interlocked.Read(ref _ticks);

    [UnsafeAccessor(UnsafeAccessorKind.Method, Name = "Update")]
    private static extern void UpdatePeer(LiteNetPeer peer, float deltaTime);

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_udpSocketv4")]
    private static extern ref Socket? SocketV4(LiteNetManager manager);

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_udpSocketv6")]
    private static extern ref Socket? SocketV6(LiteNetManager manager);

    /// <summary>Marks <paramref name="peer"/> as having packets or acknowledgements queued, and flushes now if the manager is free.</summary>
    public void Flush(TransportPeer peer)
    {
        if (peer.TryMarkDirty()) _dirty.Enqueue(peer);
        FlushIfFree();
    }

    /// <summary>
    /// Flushes the dirty peers unless another thread holds the manager (it flushes before it lets go) or this thread
    /// does (it is inside the manager, e.g. in an event handler: the round flushes at its end).
    /// </summary>
    public void FlushIfFree()
    {
        while (!_dirty.IsEmpty && !Monitor.IsEntered(Gate) && Monitor.TryEnter(Gate))
        {
            try { FlushDirty(); }
            finally { Monitor.Exit(Gate); }
            Interlocked.MemoryBarrier(); // a peer marked while we held the gate is seen here, or its sender got the gate
        }
    }

    /// <summary>Under <see cref="Gate"/>: sends what the dirty peers have queued.</summary>
    public void FlushDirty()
    {
        while (_dirty.TryDequeue(out var peer))
        {
            peer.ClearDirty(); // before the update: a send racing with it marks the peer again
            if (peer.Net.ConnectionState == ConnectionState.Disconnected) continue;
            UpdatePeer(peer.Net, 0f);
            Interlocked.Increment(ref _flushes);
        }
    }

    /// <summary>
    /// The interval of the full update: the configured tick up to <see cref="PeersPerTickStep"/> connected peers, one more
    /// tick for each further step of them, at most <see cref="MaxTickStretch"/> ticks (15 → 60 ms at 1,000 peers). The
    /// update costs O(peers) and, with messages flushing their own peer, only paces resends, pings and timeouts: a coordinator
    /// of 1,000 idle nodes spent most of its idle CPU on it, and a lost packet now waits at most one longer tick.
    /// </summary>
    internal TimeSpan Tick => _tick * Math.Clamp(1 + _manager.ConnectedPeersCount / PeersPerTickStep, 1, MaxTickStretch);

    /// <summary>Under <see cref="Gate"/>: the full update of every peer when a tick is due.</summary>
    public void TickIfDue()
    {
        long now = _time.GetTimestamp();
        var elapsed = _time.GetElapsedTime(_lastTick, now);
        if (elapsed < Tick) return;
        _lastTick = now;
        _manager.ManualUpdate((float)elapsed.TotalMilliseconds);
        Interlocked.Increment(ref _ticks);
    }

    /// <summary>Real milliseconds until the next tick is due, at most <paramref name="limit"/>.</summary>
    public int MillisecondsToTick(int limit)
    {
        var left = Tick - _time.GetElapsedTime(_lastTick);
        return left <= TimeSpan.Zero ? 0 : (int)Math.Min(limit, Math.Ceiling(left.TotalMilliseconds));
    }

    /// <summary>
    /// Asks the poll thread for a round now (it has commands to run): an empty datagram to the manager's own socket,
    /// which is what the poll thread waits on. Coalesced: one datagram per round at most.
    /// </summary>
    public void Wake()
    {
        if (Interlocked.Exchange(ref _wakeRequested, 1) != 0) return;
        var socket = SocketV4(_manager) ?? SocketV6(_manager);
        if (socket?.LocalEndPoint is not IPEndPoint local) return;
        var address = local.Address.Equals(IPAddress.Any) ? IPAddress.Loopback
            : local.Address.Equals(IPAddress.IPv6Any) ? IPAddress.IPv6Loopback : local.Address;
        try { socket.SendTo([], new IPEndPoint(address, local.Port)); }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { /* the next round comes with the tick */ }
    }

    /// <summary>Poll thread, at the start of a round: forgets the wake request (commands queued after this wake again).</summary>
    public void TakeWake() => Interlocked.Exchange(ref _wakeRequested, 0);

    /// <summary>
    /// Once the manager is started: its sockets stop blocking. A send is made under <see cref="Gate"/>, which the receive
    /// path needs too; a blocking send on a full socket buffer (on loopback it fills while receivers do not read) would
    /// stop this side's receiving for the socket's send timeout, and two sides doing so wait on each other. Without
    /// blocking, such a datagram is dropped as a full network would drop it, and LiteNetLib resends it at a tick.
    /// </summary>
    public void StopBlocking()
    {
        foreach (var socket in Sockets) socket.Blocking = false;
    }

    /// <summary>The manager's sockets (one, or two when bound to IPv6), for a <see cref="TransportPump"/> to wait on.</summary>
    public IEnumerable<Socket> Sockets
    {
        get
        {
            if (SocketV4(_manager) is { } v4) yield return v4;
            if (SocketV6(_manager) is { } v6) yield return v6;
        }
    }

    /// <summary>Poll thread, without <see cref="Gate"/>: waits up to <paramref name="timeoutMs"/> for a datagram; true when one is there.</summary>
    public bool WaitForDatagram(int timeoutMs)
    {
        var v4 = SocketV4(_manager);
        var v6 = SocketV6(_manager);
        try
        {
            if (v6 is null || v4 is null) return (v4 ?? v6)?.Poll(timeoutMs * 1000, SelectMode.SelectRead) ?? false;
            _selectList.Clear();
            _selectList.Add(v4);
            _selectList.Add(v6);
            Socket.Select(_selectList, null, null, timeoutMs * 1000);
            return _selectList.Count > 0;
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            return false;
        }
    }

    /// <summary>
    /// Under <see cref="Gate"/>: receives what the sockets hold (LiteNetLib raises its events inline). Empty datagrams
    /// (our wake-ups, or anyone's) and pending socket errors are consumed first: LiteNetLib reads only while data is
    /// available, so either would leave the socket readable for ever and the poll thread spinning.
    /// </summary>
    public void Receive()
    {
        DiscardEmpty(SocketV4(_manager));
        DiscardEmpty(SocketV6(_manager));
        _manager.PollEvents();
    }

    private void DiscardEmpty(Socket? socket)
    {
        if (socket is null) return;
        EndPoint from = new IPEndPoint(socket.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0);
        for (int i = 0; i < MaxEmptyDatagramsPerRound; i++)
        {
            try
            {
                if (socket.Available != 0 || !socket.Poll(0, SelectMode.SelectRead)) return;
                socket.ReceiveFrom(_discard, ref from);
            }
            catch (SocketException) { /* a pending error (e.g. ICMP unreachable) is consumed by the failed read */ }
            catch (ObjectDisposedException) { return; }
        }
    }
}
