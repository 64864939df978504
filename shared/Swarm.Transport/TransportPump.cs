using System.Net;
using System.Net.Sockets;

namespace Swarm.Transport;

/// <summary>
/// One thread that runs the rounds of many <see cref="LiteNetTransport"/>s (<see cref="TransportOptions.Pump"/>) in place
/// of a poll thread each: it waits on all their sockets at once and runs the round of each transport with a datagram
/// waiting, and every transport's round (its LiteNetLib tick, its sweeps) every <c>tickMs</c>. For load generators that
/// simulate hundreds of nodes in one process over real sockets; a daemon has one transport and its own poll thread.
/// </summary>
/// <remarks>
/// Sends do not need the pump: the sending thread flushes its peer (<see cref="ManualNetDriver"/>). A transport's commands
/// (connects, disconnects) and its stop wake the pump through the transport's own socket.
/// </remarks>
public sealed class TransportPump : IDisposable
{
    private readonly object _lock = new();
    private readonly List<LiteNetTransport> _added = [];
    private readonly List<LiteNetTransport> _transports = [];
    private readonly Dictionary<Socket, LiteNetTransport> _bySocket = [];
    private readonly List<Socket> _ready = [];
    private readonly Socket _wake;
    private readonly Thread _thread;
    private readonly int _tickMs;
    private volatile bool _disposed;

    /// <summary>Starts the pump's thread.</summary>
    /// <param name="name">Thread name, for diagnostics.</param>
    /// <param name="tickMs">How often every transport's round runs without datagrams (its LiteNetLib tick and sweeps): keep it
    /// no longer than the transports' <see cref="TransportOptions.UpdateTimeMs"/>. Default: 100.</param>
    public TransportPump(string name, int tickMs = 100)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(tickMs, 1);
        _tickMs = tickMs;
        _wake = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        _wake.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _thread = new Thread(Run) { IsBackground = true, Name = name };
        _thread.Start();
    }

    internal void Add(LiteNetTransport transport)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        lock (_lock) _added.Add(transport);
        Wake();
    }

    private void Wake()
    {
        try { _wake.SendTo([], _wake.LocalEndPoint!); }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { /* the next pass comes with the tick */ }
    }

    private void Run()
    {
        long lastPass = Environment.TickCount64;
        var discard = new byte[1];
        EndPoint from = new IPEndPoint(IPAddress.Any, 0);
        while (!_disposed)
        {
            TakeAdded();
            _ready.Clear();
            _ready.Add(_wake);
            foreach (var socket in _bySocket.Keys) _ready.Add(socket);
            int wait = (int)Math.Max(0, _tickMs - (Environment.TickCount64 - lastPass));
            try { Socket.Select(_ready, null, null, wait * 1000); }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { _ready.Clear(); }
            foreach (var socket in _ready)
            {
                if (socket == _wake)
                {
                    try { while (_wake.Available == 0 && _wake.Poll(0, SelectMode.SelectRead)) _wake.ReceiveFrom(discard, ref from); }
                    catch (SocketException) { }
                }
                else if (_bySocket.TryGetValue(socket, out var transport) && !Release(transport)) transport.RunRound(readable: true);
            }
            if (Environment.TickCount64 - lastPass < _tickMs) continue;
            lastPass = Environment.TickCount64;
            foreach (var transport in _transports.ToArray())
                if (!Release(transport)) transport.RunRound(readable: false);
        }
        foreach (var transport in _transports.ToArray()) Release(transport, force: true);
        lock (_lock)
        {
            foreach (var transport in _added) transport.ReleasedByPump();
            _added.Clear();
        }
    }

    private void TakeAdded()
    {
        lock (_lock)
        {
            foreach (var transport in _added)
            {
                _transports.Add(transport);
                foreach (var socket in transport.Driver.Sockets) _bySocket[socket] = transport;
            }
            _added.Clear();
        }
    }

    /// <summary>Lets a stopping transport go (its stop waits for this); false while it still runs.</summary>
    private bool Release(LiteNetTransport transport, bool force = false)
    {
        if (!transport.IsStopping && !force) return false;
        _transports.Remove(transport);
        foreach (var socket in transport.Driver.Sockets) _bySocket.Remove(socket);
        transport.ReleasedByPump();
        return true;
    }

    /// <summary>Stops the thread; transports still on it are let go (dispose them first).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Wake();
        _thread.Join();
        _wake.Dispose();
    }
}
