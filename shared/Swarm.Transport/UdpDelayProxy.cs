using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Swarm.Transport;

/// <summary>Which way a datagram crosses a <see cref="UdpDelayProxy"/>.</summary>
internal enum RelayDirection
{
    /// <summary>From the client to the server.</summary>
    ToServer,
    /// <summary>From the server back to the client.</summary>
    ToClient,
}

/// <summary>
/// A user-space UDP relay on loopback that delays every datagram by a fixed one-way time in each direction
/// (RTT = 2 × one-way), without loss, reordering or a rate limit — a stand-in for <c>tc netem delay</c>, which this
/// kernel lacks, and for LiteNetLib's <c>SimulateLatency</c>, which the NuGet build compiles out. Relays one client.
/// An optional hook sees every datagram first and may record, alter or drop it: the tests' man in the middle.
/// </summary>
internal sealed class UdpDelayProxy : IDisposable
{
    private readonly Socket _front;
    private readonly Socket _back;
    private readonly IPEndPoint _server;
    private readonly long _delayTicks;
    private readonly DelayLine _toServer;
    private readonly DelayLine _toClient;
    private readonly Thread[] _threads;
    private readonly Func<byte[], RelayDirection, byte[]?>? _inspect;
    private volatile bool _stopping;
    private EndPoint? _client;

    /// <param name="server">Where datagrams from the client go.</param>
    /// <param name="oneWayDelay">Delay added in each direction.</param>
    /// <param name="inspect">
    /// Called on the relay's receive thread with every datagram (a copy) before it is queued; returns what to forward
    /// (the same array, an altered one) or null to drop it. Null forwards everything unchanged.
    /// </param>
    public UdpDelayProxy(IPEndPoint server, TimeSpan oneWayDelay, Func<byte[], RelayDirection, byte[]?>? inspect = null)
    {
        _inspect = inspect;
        _server = server;
        _delayTicks = (long)(oneWayDelay.TotalSeconds * Stopwatch.Frequency);
        _front = NewSocket();
        _back = NewSocket();
        _toServer = new DelayLine();
        _toClient = new DelayLine();
        _threads =
        [
            new Thread(() => ReceiveLoop(_front, _toServer, fromClient: true)) { IsBackground = true, Name = "delay-proxy-rx-front" },
            new Thread(() => ReceiveLoop(_back, _toClient, fromClient: false)) { IsBackground = true, Name = "delay-proxy-rx-back" },
            new Thread(() => SendLoop(_toServer, _back, () => _server)) { IsBackground = true, Name = "delay-proxy-tx-server" },
            new Thread(() => SendLoop(_toClient, _front, () => _client)) { IsBackground = true, Name = "delay-proxy-tx-client" },
        ];
        foreach (var t in _threads) t.Start();
    }

    /// <summary>Where clients send to reach the server through the delay.</summary>
    public IPEndPoint FrontEndPoint => (IPEndPoint)_front.LocalEndPoint!;

    private static Socket NewSocket()
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp)
        {
            ReceiveBufferSize = 4 * 1024 * 1024,
            SendBufferSize = 4 * 1024 * 1024,
            ReceiveTimeout = 100,
        };
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return s;
    }

    private void ReceiveLoop(Socket socket, DelayLine line, bool fromClient)
    {
        var buffer = new byte[65536];
        EndPoint from = new IPEndPoint(IPAddress.Any, 0);
        while (!_stopping)
        {
            int n;
            try
            {
                n = socket.ReceiveFrom(buffer, ref from);
            }
            catch (SocketException)
            {
                continue; // receive timeout (lets us see _stopping) or ICMP port unreachable
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            if (fromClient) _client ??= new IPEndPoint(((IPEndPoint)from).Address, ((IPEndPoint)from).Port);
            var datagram = buffer.AsSpan(0, n).ToArray();
            if (_inspect is not null)
            {
                var forward = _inspect(datagram, fromClient ? RelayDirection.ToServer : RelayDirection.ToClient);
                if (forward is null) continue;
                datagram = forward;
            }
            line.Add(Stopwatch.GetTimestamp() + _delayTicks, datagram);
        }
    }

    private void SendLoop(DelayLine line, Socket socket, Func<EndPoint?> target)
    {
        while (!_stopping)
        {
            if (!line.TryTakeDue(out var datagram, out long waitTicks))
            {
                if (waitTicks < 0) line.Wait(TimeSpan.FromMilliseconds(50)); // empty: sleep until a datagram arrives
                else line.Wait(TimeSpan.FromTicks(Math.Max(TimeSpan.TicksPerMillisecond, waitTicks * TimeSpan.TicksPerSecond / Stopwatch.Frequency))); // not due yet: until it is, or a datagram arrives
                continue;
            }
            var to = target();
            if (to is null) continue;
            try
            {
                socket.SendTo(datagram, to);
            }
            catch (SocketException)
            {
                // the datagram is lost, as on a real link
            }
            catch (ObjectDisposedException)
            {
                return;
            }
        }
    }

    public void Dispose()
    {
        _stopping = true;
        _toServer.Wake();
        _toClient.Wake();
        foreach (var t in _threads) t.Join();
        _front.Dispose();
        _back.Dispose();
        _toServer.Dispose();
        _toClient.Dispose();
    }

    /// <summary>FIFO of datagrams with due times (constant delay keeps them in due order).</summary>
    private sealed class DelayLine : IDisposable
    {
        private readonly ConcurrentQueue<(long Due, byte[] Data)> _queue = new();
        private readonly SemaphoreSlim _signal = new(0);

        public void Add(long due, byte[] data)
        {
            _queue.Enqueue((due, data));
            if (_signal.CurrentCount == 0) _signal.Release();
        }

        /// <summary>Takes the head if due; otherwise <paramref name="waitTicks"/> is the time until it is due, or -1 when empty.</summary>
        public bool TryTakeDue(out byte[] data, out long waitTicks)
        {
            data = [];
            waitTicks = -1;
            if (!_queue.TryPeek(out var head)) return false;
            long now = Stopwatch.GetTimestamp();
            if (head.Due > now)
            {
                waitTicks = head.Due - now;
                return false;
            }
            _queue.TryDequeue(out head);
            data = head.Data;
            return true;
        }

        public void Wait(TimeSpan timeout) => _signal.Wait(timeout);

        public void Wake() => _signal.Release();

        public void Dispose() => _signal.Dispose();
    }
}
