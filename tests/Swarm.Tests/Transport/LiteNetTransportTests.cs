using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Swarm.Protocol;
using Swarm.Transport;
using Xunit;

namespace Swarm.Tests.Transport;

public class LiteNetTransportTests
{
    private static readonly TimeSpan Long = TimeSpan.FromSeconds(20);

    private static LiteNetTransport Start(string? secret = "s3cret", Action<TransportOptions>? configure = null, TestLogger? logger = null)
    {
        var options = new TransportOptions { Secret = secret };
        configure?.Invoke(options);
        return LiteNetTransport.Start(options, logger);
    }

    /// <summary>Answers every inbound message: ForwardRequest with itself, anything else with Ack.</summary>
    private static Task Echo(ITransport server) => Task.Run(async () =>
    {
        await foreach (var m in server.Inbound.ReadAllAsync())
        {
            IMessage reply = m.Envelope.Body is ForwardRequest fr ? fr : new Ack();
            if (m.Envelope.Body is Drain) continue; // "no reply" messages for the timeout test
            try { m.Peer.Send(m.Envelope.CreateReply(reply)); } catch (PeerDisconnectedException) { }
        }
    });

    private static Envelope Heartbeat() => Envelope.Create(new Heartbeat { State = NodeReadiness.Ready, Sessions = 1 });

    [Fact]
    public async Task Start_PortZero_ReportsActualPort()
    {
        await using var t = Start();
        Assert.NotEqual(0, t.LocalEndPoint.Port);
        Assert.Equal(IPAddress.Loopback, t.LocalEndPoint.Address);
    }

    [Fact]
    public void Start_InvalidOptions_ListsEveryProblem()
    {
        var ex = Assert.Throws<ArgumentException>(() => LiteNetTransport.Start(new TransportOptions { Channels = 0, InboundCapacity = 0 }));
        Assert.Contains("Channels 0 is outside 1–64", ex.Message);
        Assert.Contains("InboundCapacity 0 must be ≥ 1", ex.Message);
    }

    [Fact]
    public async Task RequestAsync_EchoServer_ReturnsCorrelatedReply()
    {
        await using var server = Start();
        await using var client = Start();
        var echo = Echo(server);
        var peer = await client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long);
        for (int i = 0; i < 20; i++)
        {
            var request = Heartbeat();
            var reply = await peer.RequestAsync(request, Long);
            Assert.IsType<Ack>(reply.Body);
            Assert.NotEqual(0, reply.CorrelationId);
        }
        Assert.Single(server.Peers);
        Assert.Equal(20, client.Counters.MessagesReceived);
    }

    [Fact]
    public async Task RequestAsync_32MbTensor_RoundTripsByteExact()
    {
        await using var server = Start();
        await using var client = Start();
        var echo = Echo(server);
        var peer = await client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long);
        var data = new byte[32 * 1024 * 1024];
        new Random(42).NextBytes(data);
        var fr = (ForwardRequest)Protocol.ProtocolSamplesAccess.ForwardRequest with
        {
            Input = new WireTensor { DType = WireDType.F16, Shape = [1, 4096, 4096], Data = data },
            DraftContext = [], DraftCount = 0,   // the sample's draft context names its one position, not 4096
        };
        var reply = await peer.RequestAsync(Envelope.Create(fr), TimeSpan.FromSeconds(60));
        var back = Assert.IsType<ForwardRequest>(reply.Body);
        Assert.Equal(new long[] { 1, 4096, 4096 }, back.Input.Shape);
        Assert.True(back.Input.Data.Span.SequenceEqual(data), "payload differs after the round trip");
        Assert.Equal(0, server.PendingInboundBytes);
    }

    [Fact]
    public async Task RequestAsync_NoReply_ThrowsTimeoutWithClearMessage()
    {
        await using var server = Start();
        await using var client = Start();
        var echo = Echo(server);
        var peer = await client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long);
        var sw = Stopwatch.StartNew();
        var ex = await Assert.ThrowsAsync<TimeoutException>(() => peer.RequestAsync(Envelope.Create(new Drain { Reason = "x" }), TimeSpan.FromMilliseconds(300)));
        Assert.InRange(sw.ElapsedMilliseconds, 250, 5000);
        Assert.Matches(@"^no reply to Drain #\d+ to 127\.0\.0\.1:\d+ within 300 ms$", ex.Message);
    }

    [Fact]
    public async Task RequestAsync_Cancelled_ThrowsOperationCanceled()
    {
        await using var server = Start();
        await using var client = Start();
        var echo = Echo(server);
        var peer = await client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long);
        using var cts = new CancellationTokenSource(100);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => peer.RequestAsync(Envelope.Create(new Drain()), Long, cts.Token));
    }

    [Fact]
    public async Task ConnectAsync_WrongSecret_RefusedWithReasonOnBothSides()
    {
        var serverLog = new TestLogger();
        await using var server = Start("right", logger: serverLog);
        await using var client = Start("wrong");
        var ex = await Assert.ThrowsAsync<PeerRefusedException>(() => client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long));
        Assert.Equal($"{server.LocalEndPoint} refused the connection: the swarm secrets differ", ex.Message);
        Assert.True(serverLog.Contains(LogLevel.Warning, "Refused connection from 127.0.0.1:"), serverLog.Dump());
        Assert.True(serverLog.Contains(LogLevel.Warning, ": the swarm secrets differ"), serverLog.Dump());
        Assert.Equal(1, server.Counters.RefusedConnections);
        Assert.Equal(1, server.Counters.HandshakesFailed);
        Assert.Equal(0, server.Counters.HandshakesEstablished);
        Assert.Empty(server.Peers);
        Assert.Empty(client.Peers);
    }

    [Fact]
    public async Task ConnectAsync_WrongProtocolVersion_RefusedWithReason()
    {
        var serverLog = new TestLogger();
        await using var server = Start(logger: serverLog);
        await using var client = Start(configure: o => o.ProtocolVersion = ProtocolInfo.Version + 1);
        var ex = await Assert.ThrowsAsync<PeerRefusedException>(() => client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long));
        Assert.Contains($"protocol version {ProtocolInfo.Version + 1} is not supported (this peer speaks {ProtocolInfo.Version})", ex.Message);
        Assert.True(serverLog.Contains(LogLevel.Warning, "protocol version"), serverLog.Dump());
    }

    [Fact]
    public async Task ConnectAsync_Version1Peer_RefusedWithProtocolVersionReason()
    {
        // Version 1 carried sampling parameters as float32 under keys this version retired: its peers must be turned away at connect.
        var serverLog = new TestLogger();
        await using var server = Start(logger: serverLog);
        await using var client = Start(configure: o => o.ProtocolVersion = 1);
        var ex = await Assert.ThrowsAsync<PeerRefusedException>(() => client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long));
        Assert.Contains($"protocol version 1 is not supported (this peer speaks {ProtocolInfo.Version})", ex.Message);
        Assert.Equal(1, server.Counters.RefusedConnections);
        Assert.Empty(server.Peers);
    }

    [Fact]
    public async Task RequestAsync_PeerDisposedMidRequest_FailsImmediately()
    {
        var server = Start();
        await using var client = Start();
        var peer = await client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long);
        string? reason = null;
        client.PeerDisconnected += (_, r) => reason = r;
        var pending = peer.RequestAsync(Heartbeat(), TimeSpan.FromSeconds(30));
        await server.Inbound.ReadAsync().AsTask().WaitAsync(Long); // the request arrived; the server never answers
        var sw = Stopwatch.StartNew();
        await server.DisposeAsync();
        var ex = await Assert.ThrowsAsync<PeerDisconnectedException>(() => pending.WaitAsync(Long));
        Assert.True(sw.ElapsedMilliseconds < 3000, $"took {sw.ElapsedMilliseconds} ms");
        Assert.Contains("closed the connection", ex.Message);
        Assert.True(peer.Disconnected.IsCancellationRequested);
        Assert.False(peer.IsConnected);
        // The event is raised on the poll thread right after pending requests fail: allow it a moment.
        for (int i = 0; i < 100 && Volatile.Read(ref reason) is null; i++) await Task.Delay(20);
        Assert.Contains("closed the connection", reason);
        Assert.Throws<PeerDisconnectedException>(() => peer.Send(Heartbeat()));
    }

    [Fact]
    public async Task RequestAsync_PeerVanishes_FailsAtDisconnectTimeoutNotRequestTimeout()
    {
        var server = Start(configure: o => o.DisconnectTimeout = TimeSpan.FromMilliseconds(800));
        await using var client = Start(configure: o => o.DisconnectTimeout = TimeSpan.FromMilliseconds(800));
        var peer = await client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long);
        var pending = peer.RequestAsync(Heartbeat(), TimeSpan.FromSeconds(30));
        await server.Inbound.ReadAsync().AsTask().WaitAsync(Long);
        var sw = Stopwatch.StartNew();
        await server.CrashAsync();
        var ex = await Assert.ThrowsAsync<PeerDisconnectedException>(() => pending.WaitAsync(Long));
        Assert.True(sw.ElapsedMilliseconds < 5000, $"took {sw.ElapsedMilliseconds} ms");
        Assert.Contains("no packets from", ex.Message);
    }

    [Fact]
    public async Task MalformedInput_FromConnectedPeer_IsDroppedLoggedAndOthersStillServed()
    {
        var serverLog = new TestLogger();
        await using var server = Start(logger: serverLog);
        await using var bad = Start();
        await using var good = Start();
        var echo = Echo(server);
        var badPeer = (TransportPeer)await bad.ConnectAsync(server.LocalEndPoint).WaitAsync(Long);
        var goodPeer = await good.ConnectAsync(server.LocalEndPoint).WaitAsync(Long);

        // Garbage that frames fine but is no record (small and chunked), a bad frame type, and a record that opens
        // but does not decode.
        bad.SendPayload(badPeer, new byte[] { 0x97, 0x01, 0xFF });
        var big = new byte[100_000];
        new Random(1).NextBytes(big);
        big[0] = 0x10; // a record's header (epoch 0, counter 1000): refused only by its tag
        Array.Clear(big, 1, 12);
        BitConverter.TryWriteBytes(big.AsSpan(5), 1000UL);
        bad.SendPayload(badPeer, big);
        badPeer.Net.Send(new byte[] { 0x7F, 1, 2, 3 }, 0, LiteNetLib.DeliveryMethod.ReliableOrdered);
        bad.SendPayload(badPeer, badPeer.Channel!.Seal(new byte[] { 0x97, 0x01, 0xFF }));
        // Raw datagrams from an unconnected socket.
        using (var udp = new UdpClient())
        {
            var junk = new byte[64];
            for (int i = 0; i < 20; i++) { new Random(i).NextBytes(junk); udp.Send(junk, junk.Length, server.LocalEndPoint); }
        }

        var reply = await goodPeer.RequestAsync(Heartbeat(), Long);
        Assert.IsType<Ack>(reply.Body);
        var reply2 = await badPeer.RequestAsync(Heartbeat(), Long); // the sender of garbage is not disconnected either
        Assert.IsType<Ack>(reply2.Body);

        await WaitUntil(() => server.Counters.Malformed >= 2 && server.Counters.Records.Rejected >= 2);
        Assert.Equal(1, server.Counters.Records.RejectedMalformed);
        Assert.Equal(1, server.Counters.Records.RejectedUnauthenticated);
        Assert.True(serverLog.Contains(LogLevel.Warning, "Dropped malformed message from 127.0.0.1:"), serverLog.Dump());
        Assert.True(serverLog.Contains(LogLevel.Warning, "unknown frame type 0x7F"), serverLog.Dump());
        Assert.True(serverLog.Contains(LogLevel.Warning, "Dropped a record from 127.0.0.1:"), serverLog.Dump());
        Assert.Equal(0, server.PendingInboundBytes);
    }

    [Fact]
    public async Task InboundFull_DropsNewestAndTellsSenderOverloaded()
    {
        var serverLog = new TestLogger();
        await using var server = Start(configure: o => o.InboundCapacity = 2, logger: serverLog);
        await using var client = Start();
        var peer = await client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long);
        // Nobody reads the server's inbound queue: the first two fit, the third is refused.
        peer.Send(Heartbeat());
        peer.Send(Heartbeat());
        await WaitUntil(() => server.Counters.MessagesReceived == 2);
        var reply = await peer.RequestAsync(Heartbeat(), Long);
        var error = Assert.IsType<ErrorReply>(reply.Body);
        Assert.Equal(ErrorCode.Overloaded, error.Code);
        Assert.Contains("inbound queue full", error.Message);
        Assert.Equal(1, server.Counters.DroppedInboundFull);
        Assert.True(serverLog.Contains(LogLevel.Warning, "Inbound queue full (2); dropped Heartbeat"), serverLog.Dump());
    }

    [Fact]
    public async Task ConnectAsync_Twice_ReturnsSameConnection()
    {
        await using var server = Start();
        await using var client = Start();
        var a = await client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long);
        var b = await client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long);
        Assert.Same(a, b);
    }

    [Fact]
    public async Task ConnectAsync_NobodyListening_FailsWithReason()
    {
        // A socket that is bound for the whole test and never answers: no one else can take its port meanwhile.
        using var silent = new UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
        int port = ((IPEndPoint)silent.Client.LocalEndPoint!).Port;
        await using var client = Start(configure: o => o.ConnectTimeout = TimeSpan.FromMilliseconds(500));
        var ex = await Assert.ThrowsAnyAsync<PeerDisconnectedException>(() => client.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port)).WaitAsync(Long));
        Assert.Equal($"no answer from 127.0.0.1:{port} within 500 ms", ex.Message);
    }

    [Fact]
    public async Task DisposeAsync_CompletesInboundAndReleasesPort()
    {
        var t = Start();
        var ep = t.LocalEndPoint;
        await t.DisposeAsync();
        Assert.True(t.Inbound.Completion.IsCompleted);
        using var rebind = new UdpClient(ep); // would throw if the socket leaked
        Assert.Equal(ep.Port, ((IPEndPoint)rebind.Client.LocalEndPoint!).Port);
    }

    private static async Task WaitUntil(Func<bool> condition)
    {
        var sw = Stopwatch.StartNew();
        while (!condition())
        {
            if (sw.Elapsed > Long) throw new TimeoutException("condition not reached");
            await Task.Delay(10);
        }
    }
}
