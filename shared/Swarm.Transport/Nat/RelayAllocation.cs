using System.Net;
using System.Net.Sockets;

namespace Swarm.Transport.Nat;

/// <summary>
/// One relayed hop of a <see cref="UdpRelay"/>: two UDP sockets of the relay, one per side. The upstream node connects to
/// <see cref="UpstreamSide"/> as if it were the downstream node; the downstream node sends a punch to
/// <see cref="DownstreamSide"/> (which opens its NAT toward the relay and tells the relay where it is). From then on
/// each datagram arriving on one side is sent out of the other to the other side's node, byte for byte: the two nodes
/// run their LiteNetLib connection and their Noise handshake end to end, so the relay sees only ciphertext and cannot
/// impersonate either (each pins the other's key).
/// </summary>
/// <remarks>
/// Only the two registered nodes are served: a side accepts datagrams from its node's address only, and the first such
/// datagram fixes the side's port (a later sender from the same address is dropped).
/// </remarks>
public sealed class RelayAllocation : IDisposable
{
    private const int MaxDatagram = 2048; // LiteNetLib packets are at most one MTU
    private readonly Side _up, _down;
    private readonly CancellationTokenSource _closed = new();
    private long _lastActivity, _bytes, _datagrams;
    private int _disposed;

    private sealed class Side(Socket socket, IPAddress node)
    {
        public Socket Socket { get; } = socket;
        public IPAddress Node { get; } = node;
        public volatile IPEndPoint? Peer;
    }

    internal RelayAllocation(IPAddress bind, IPAddress upstream, IPAddress downstream, TimeProvider time)
    {
        Time = time;
        _up = new Side(Open(bind), upstream);
        _down = new Side(Open(bind), downstream);
        UpstreamSide = (IPEndPoint)_up.Socket.LocalEndPoint!;
        DownstreamSide = (IPEndPoint)_down.Socket.LocalEndPoint!;
        _lastActivity = time.GetTimestamp();
        _ = PumpAsync(_up, _down);
        _ = PumpAsync(_down, _up);
    }

    private TimeProvider Time { get; }

    /// <summary>Where the upstream node connects (the relay's socket for its side).</summary>
    public IPEndPoint UpstreamSide { get; }

    /// <summary>Where the downstream node punches (the relay's socket for its side).</summary>
    public IPEndPoint DownstreamSide { get; }

    /// <summary>True until disposed (idle, lost, or no longer needed).</summary>
    public bool IsOpen => _disposed == 0;

    /// <summary>Cancelled when the allocation closes.</summary>
    public CancellationToken Closed => _closed.Token;

    /// <summary>Bytes forwarded, both directions.</summary>
    public long BytesForwarded => Interlocked.Read(ref _bytes);

    /// <summary>Datagrams forwarded, both directions.</summary>
    public long DatagramsForwarded => Interlocked.Read(ref _datagrams);

    /// <summary>How long ago a datagram last arrived on either side.</summary>
    public TimeSpan Idle => Time.GetElapsedTime(Interlocked.Read(ref _lastActivity));

    private static Socket Open(IPAddress bind)
    {
        var socket = new Socket(bind.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            if (OperatingSystem.IsWindows()) socket.IOControl(-1744830452 /* SIO_UDP_CONNRESET */, [0], null);
            socket.Bind(new IPEndPoint(bind, 0));
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private async Task PumpAsync(Side from, Side to)
    {
        var buffer = new byte[MaxDatagram];
        EndPoint any = new IPEndPoint(from.Node.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0);
        while (IsOpen)
        {
            SocketReceiveFromResult received;
            try { received = await from.Socket.ReceiveFromAsync(buffer, SocketFlags.None, any, _closed.Token).ConfigureAwait(false); }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException) { return; }
            catch (SocketException) { continue; } // an ICMP error for an earlier send: the path may come back
            var sender = (IPEndPoint)received.RemoteEndPoint;
            if (!sender.Address.Equals(from.Node)) continue;          // not the registered node
            from.Peer ??= sender;
            if (!sender.Equals(from.Peer)) continue;                   // another socket at that address
            Interlocked.Exchange(ref _lastActivity, Time.GetTimestamp());
            if (to.Peer is not { } target) continue;                   // the other side has not shown up yet (punches, early connects)
            try
            {
                await to.Socket.SendToAsync(buffer.AsMemory(0, received.ReceivedBytes), SocketFlags.None, target, _closed.Token).ConfigureAwait(false);
                Interlocked.Add(ref _bytes, received.ReceivedBytes);
                Interlocked.Increment(ref _datagrams);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException) { return; }
            catch (SocketException) { } // transient: UDP loses datagrams anyway; the ends resend
        }
    }

    /// <summary>Closes both sockets; the nodes' connection over it ends by their timeout.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _closed.Cancel();
        _up.Socket.Dispose();
        _down.Socket.Dispose();
        _closed.Dispose();
    }
}
