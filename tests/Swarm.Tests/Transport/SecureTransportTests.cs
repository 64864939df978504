using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using LiteNetLib;
using Microsoft.Extensions.Logging;
using Swarm.Protocol;
using Swarm.Transport;
using Swarm.Transport.Security;
using Xunit;

namespace Swarm.Tests.Transport;

/// <summary>The secure channel through the real transport: real UDP sockets on 127.0.0.1, relays in between.</summary>
public class SecureTransportTests
{
    private static readonly TimeSpan Long = TimeSpan.FromSeconds(20);

    private static LiteNetTransport Start(string? secret = "s3cret", Action<TransportOptions>? configure = null, TestLogger? logger = null)
    {
        var options = new TransportOptions { Secret = secret };
        configure?.Invoke(options);
        return LiteNetTransport.Start(options, logger);
    }

    private static Task Echo(ITransport server) => Task.Run(async () =>
    {
        await foreach (var m in server.Inbound.ReadAllAsync())
            try { m.Peer.Send(m.Envelope.CreateReply(m.Envelope.Body is ForwardRequest fr ? fr : new Ack())); }
            catch (PeerDisconnectedException) { }
    });

    /// <summary>A prefill step carrying token ids as int64, as the coordinator sends it to the first stage.</summary>
    private static Envelope Prefill(long[] ids)
    {
        var data = new byte[ids.Length * 8];
        for (int i = 0; i < ids.Length; i++) BinaryPrimitives.WriteInt64LittleEndian(data.AsSpan(i * 8), ids[i]);
        return Envelope.Create(new ForwardRequest
        {
            JobId = 1, SessionId = 1,
            Input = new WireTensor { DType = WireDType.I64, Shape = [1, ids.Length], Data = data },
            Route = [new Hop { NodeId = 1, Endpoint = "127.0.0.1:1", Layers = new LayerRange(0, 1) }],
        });
    }

    private static readonly long[] PromptIds = [50_001, 12_345, 777, 31_337, 4_242, 9_999, 23_456, 1_234];

    private static byte[] Int64Bytes(long[] ids) => ids.SelectMany(i => BitConverter.GetBytes(i)).ToArray();

    private static byte[] Int32Bytes(long[] ids) => ids.SelectMany(i => BitConverter.GetBytes((int)i)).ToArray();

    /// <summary>Where a sealed single-packet message starts inside a datagram: the frame byte 0x01, then a record of epoch 0.</summary>
    internal static int RecordOffset(byte[] datagram)
    {
        for (int i = 0; i + 6 < Math.Min(datagram.Length, 16); i++)
            if (datagram[i] == 0x01 && datagram[i + 1] == 0x10 && datagram.AsSpan(i + 2, 4).SequenceEqual(new byte[4])) return i + 1;
        return -1;
    }

    [Fact]
    public async Task Connect_RunsTheHandshake_BothSidesSeeTheKeyTheOtherProved()
    {
        using var serverIdentity = NodeIdentity.CreateEphemeral();
        using var clientIdentity = NodeIdentity.CreateEphemeral();
        await using var server = Start(configure: o => o.Identity = serverIdentity);
        await using var client = Start(configure: o => o.Identity = clientIdentity);
        var echo = Echo(server);
        var peer = await client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long);
        Assert.IsType<Ack>((await peer.RequestAsync(Envelope.Create(new Heartbeat()), Long)).Body);

        Assert.Equal(serverIdentity.PublicKey.ToArray(), peer.RemoteKey.ToArray());
        Assert.Equal(serverIdentity.Fingerprint, peer.RemoteFingerprint);
        var inbound = Assert.Single(server.Peers);
        Assert.Equal(clientIdentity.PublicKey.ToArray(), inbound.RemoteKey.ToArray());
        Assert.Equal(serverIdentity.PublicKey.ToArray(), server.LocalKey.ToArray());
        Assert.Equal("Noise_XXpsk3_25519_ChaChaPoly_SHA256", ((TransportPeer)peer).Channel!.ProtocolName);
        Assert.Equal(1, client.Counters.HandshakesEstablished);
        Assert.Equal(1, server.Counters.HandshakesEstablished);
        Assert.True(server.Counters.Records.Opened >= 1 && client.Counters.Records.Opened >= 1);
    }

    [Fact]
    public async Task OpenSwarm_NoSecret_RunsNoiseXX_AndStillEncrypts()
    {
        await using var server = Start(secret: null);
        await using var client = Start(secret: null);
        var echo = Echo(server);
        var peer = (TransportPeer)await client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long);
        Assert.IsType<Ack>((await peer.RequestAsync(Envelope.Create(new Heartbeat()), Long)).Body);
        Assert.Equal("Noise_XX_25519_ChaChaPoly_SHA256", peer.Channel!.ProtocolName);
        Assert.Equal(server.LocalKey.ToArray(), peer.RemoteKey.ToArray());
    }

    [Fact]
    public async Task MissingSecret_IsRefusedWithTheReasonOnBothSides()
    {
        var serverLog = new TestLogger();
        await using var server = Start("right", logger: serverLog);
        await using var client = Start(secret: null);
        var ex = await Assert.ThrowsAsync<PeerRefusedException>(() => client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long));
        Assert.Equal($"{server.LocalEndPoint} refused the connection: this swarm requires a swarm secret; you have none", ex.Message);
        Assert.True(serverLog.Contains(LogLevel.Warning, "the peer connects without a swarm secret, but this swarm requires one"), serverLog.Dump());
        Assert.Empty(server.Peers);
    }

    [Fact]
    public async Task PinnedKey_Matching_Connects_Otherwise_RefusedOnBothSides()
    {
        using var impostor = NodeIdentity.CreateEphemeral();
        var serverLog = new TestLogger();
        var clientLog = new TestLogger();
        await using var server = Start(logger: serverLog);
        await using var client = Start(logger: clientLog);

        var ex = await Assert.ThrowsAsync<PeerRefusedException>(() => client.ConnectAsync(server.LocalEndPoint, impostor.PublicKey).WaitAsync(Long));
        string serverFingerprint = PeerKey.Fingerprint(server.LocalKey.Span);
        Assert.Equal($"{server.LocalEndPoint} failed authentication: the peer's key {serverFingerprint} is not the pinned key {impostor.Fingerprint}", ex.Message);
        Assert.True(clientLog.Contains(LogLevel.Warning, "is not the pinned key"), clientLog.Dump());
        await WaitUntil(() => server.Counters.HandshakesFailed == 1);
        Assert.True(serverLog.Contains(LogLevel.Warning, "is not the key this peer pinned"), serverLog.Dump());
        Assert.Empty(server.Peers);

        var peer = await client.ConnectAsync(server.LocalEndPoint, server.LocalKey).WaitAsync(Long);
        Assert.True(peer.IsConnected);
        // The live connection is reused for the right key, and refused for another.
        Assert.Same(peer, await client.ConnectAsync(server.LocalEndPoint, server.LocalKey).WaitAsync(Long));
        var again = await Assert.ThrowsAsync<PeerRefusedException>(() => client.ConnectAsync(server.LocalEndPoint, impostor.PublicKey).WaitAsync(Long));
        Assert.Contains($"is {serverFingerprint}, not the expected {impostor.Fingerprint}", again.Message);
    }

    [Fact]
    public async Task AuthorizeInbound_RefusesAKey_BothSidesSayWhy()
    {
        var serverLog = new TestLogger();
        await using var server = Start(configure: o => o.AuthorizeInbound = _ => "not a member", logger: serverLog);
        await using var client = Start();
        var ex = await Assert.ThrowsAsync<PeerRefusedException>(() => client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long));
        Assert.Contains($"refused the connection: your key {PeerKey.Fingerprint(client.LocalKey.Span)} is not accepted: not a member", ex.Message);
        Assert.True(serverLog.Contains(LogLevel.Warning, "is not accepted: not a member"), serverLog.Dump());
        Assert.Equal(1, server.Counters.HandshakesFailed);
        Assert.Empty(server.Peers);
    }

    [Fact]
    public async Task SilentPeer_AfterConnecting_IsDroppedAtTheHandshakeTimeout()
    {
        var serverLog = new TestLogger();
        await using var server = Start(configure: o => o.HandshakeTimeout = TimeSpan.FromMilliseconds(300), logger: serverLog);
        // A LiteNetLib client that sends a valid connection request and then nothing.
        var listener = new EventBasedNetListener();
        var disconnected = new TaskCompletionSource<string>();
        listener.PeerDisconnectedEvent += (_, info) => disconnected.TrySetResult(info.AdditionalData.AvailableBytes > 0
            ? Encoding.UTF8.GetString(info.AdditionalData.GetRemainingBytesSpan()) : info.Reason.ToString());
        var raw = new NetManager(listener) { UnsyncedEvents = true };
        raw.Start(IPAddress.Loopback, IPAddress.IPv6Loopback, 0);
        try
        {
            raw.Connect(server.LocalEndPoint, ConnectRequest.Build(ProtocolInfo.Version, encrypted: true).AsSpan());
            Assert.Equal("the handshake timed out", await disconnected.Task.WaitAsync(Long));
        }
        finally
        {
            raw.Stop();
        }
        Assert.Equal(1, server.Counters.HandshakesTimedOut);
        Assert.Equal(1, server.Counters.RefusedConnections);
        Assert.True(serverLog.Contains(LogLevel.Warning, "the handshake did not complete within 300 ms"), serverLog.Dump());
        Assert.Empty(server.Peers);
    }

    [Fact]
    public async Task Eavesdropper_OnTheRelay_SeesNeitherTokenIdsNorText_UnlessEncryptionIsOff()
    {
        const string text = "the quick brown fox tells the swarm a secret";
        foreach (bool encrypt in new[] { true, false })
        {
            var captured = new ConcurrentQueue<byte[]>();
            await using var server = Start(configure: o => o.Encrypt = encrypt);
            await using var client = Start(configure: o => o.Encrypt = encrypt);
            var echo = Echo(server);
            using var relay = new UdpDelayProxy(server.LocalEndPoint, TimeSpan.Zero, (d, _) => { captured.Enqueue(d); return d; });
            var peer = await client.ConnectAsync(relay.FrontEndPoint).WaitAsync(Long);
            await peer.RequestAsync(Prefill(PromptIds), Long);
            await peer.RequestAsync(Envelope.Create(new ErrorReply { Code = ErrorCode.BadRequest, Message = text }), Long);

            bool seen = captured.Any(d => d.AsSpan().IndexOf(Int64Bytes(PromptIds)) >= 0)
                     && captured.Any(d => d.AsSpan().IndexOf(Encoding.UTF8.GetBytes(text)) >= 0);
            Assert.True(captured.Sum(d => d.Length) > 2 * (PromptIds.Length * 8 + text.Length), "the relay carried both exchanges");
            if (encrypt)
            {
                Assert.DoesNotContain(captured, d => d.AsSpan().IndexOf(Int64Bytes(PromptIds[..2])) >= 0);
                Assert.DoesNotContain(captured, d => d.AsSpan().IndexOf(Int32Bytes(PromptIds[..2])) >= 0);
                Assert.DoesNotContain(captured, d => d.AsSpan().IndexOf(Encoding.UTF8.GetBytes("quick brown")) >= 0);
            }
            else
            {
                Assert.True(seen, "the control run without encryption must show the ids and the text in the clear");
            }
        }
    }

    [Fact]
    public async Task Relay_FlipsOneBitOfARecord_ItIsDroppedAndCounted_TheConnectionGoesOn()
    {
        var serverLog = new TestLogger();
        await using var server = Start(logger: serverLog);
        await using var client = Start();
        var received = new ConcurrentQueue<Envelope>();
        var reader = Task.Run(async () => { await foreach (var m in server.Inbound.ReadAllAsync()) received.Enqueue(m.Envelope); });
        int armed = 0;
        using var relay = new UdpDelayProxy(server.LocalEndPoint, TimeSpan.Zero, (d, direction) =>
        {
            int at = RecordOffset(d);
            if (direction == RelayDirection.ToServer && at >= 0 && d.Length > 100 && Interlocked.CompareExchange(ref armed, 2, 1) == 1)
                d[at + 13 + 5] ^= 0x04; // one bit of the ciphertext
            return d;
        });
        var peer = await client.ConnectAsync(relay.FrontEndPoint).WaitAsync(Long);
        Volatile.Write(ref armed, 1);
        long tampered = peer.Send(Prefill(PromptIds));
        await WaitUntil(() => Volatile.Read(ref armed) == 2);
        long next = peer.Send(Prefill(PromptIds));
        await WaitUntil(() => received.Any(e => e.MessageId == next));

        Assert.DoesNotContain(received, e => e.MessageId == tampered);
        Assert.Equal(1, server.Counters.Records.RejectedUnauthenticated);
        Assert.True(serverLog.Contains(LogLevel.Warning, "it did not authenticate (altered in transit, or forged)"), serverLog.Dump());
        Assert.True(peer.IsConnected);
    }

    [Fact]
    public async Task Relay_ReplaysAWholeConnectionFromAnotherPort_NoPeerIsAccepted_TheRefusalIsCounted()
    {
        await using var server = Start(configure: o => o.HandshakeTimeout = TimeSpan.FromSeconds(1));
        await using var client = Start();
        var echo = Echo(server);
        var recorded = new ConcurrentQueue<byte[]>();
        using (var relay = new UdpDelayProxy(server.LocalEndPoint, TimeSpan.Zero, (d, direction) =>
               {
                   if (direction == RelayDirection.ToServer) recorded.Enqueue(d.ToArray());
                   return d;
               }))
        {
            var peer = await client.ConnectAsync(relay.FrontEndPoint).WaitAsync(Long);
            await peer.RequestAsync(Prefill(PromptIds), Long);
        }
        Assert.Single(server.Peers);

        using var replayer = new UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
        foreach (var datagram in recorded)
        {
            await replayer.SendAsync(datagram, server.LocalEndPoint);
            await Task.Delay(2);
        }
        await WaitUntil(() => server.Counters.HandshakesFailed + server.Counters.HandshakesTimedOut >= 1);
        Assert.Single(server.Peers);
        Assert.Equal(1, server.Counters.HandshakesEstablished);
        Assert.True(server.Counters.RefusedConnections >= 1);
    }

    [Fact]
    public async Task ConnectFlood_FromOneAddress_IsRateLimited_LoggedOnce_AndEveryoneGetsInEventually()
    {
        var serverLog = new TestLogger();
        await using var server = Start(configure: o => { o.ConnectBurst = 2; o.ConnectRatePerSecond = 4; }, logger: serverLog);
        var clients = Enumerable.Range(0, 8).Select(_ => Start(configure: o => o.ConnectTimeout = TimeSpan.FromSeconds(10))).ToList();
        try
        {
            var peers = await Task.WhenAll(clients.Select(c => c.ConnectAsync(server.LocalEndPoint))).WaitAsync(Long);
            Assert.All(peers, p => Assert.True(p.IsConnected));
            Assert.True(server.Counters.RateLimitedConnections >= 6, $"rate limited {server.Counters.RateLimitedConnections}");
            Assert.Equal(server.Counters.RateLimitedConnections, server.Counters.RefusedConnections);
            Assert.Equal(1, serverLog.Entries.Count(e => e.Message.Contains("rate limited", StringComparison.Ordinal)));
        }
        finally
        {
            foreach (var c in clients) await c.DisposeAsync();
        }
    }

    [Fact]
    public async Task KeysRotate_UnderAMessageBudget_AndEveryMessageStillArrives()
    {
        await using var server = Start(configure: o => o.Records = new RecordCipherOptions { RekeyAfterMessages = 3 });
        await using var client = Start(configure: o => o.Records = new RecordCipherOptions { RekeyAfterMessages = 3 });
        var echo = Echo(server);
        var peer = await client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long);
        var replies = await Task.WhenAll(Enumerable.Range(0, 20).Select(_ => peer.RequestAsync(Prefill(PromptIds), Long)));
        Assert.All(replies, r => Assert.IsType<ForwardRequest>(r.Body));
        Assert.True(client.Counters.Records.SendRekeys >= 5);
        Assert.True(server.Counters.Records.ReceiveRekeys >= 5);
        Assert.Equal(0, server.Counters.Records.Rejected);
    }

    [Fact]
    public async Task PlaintextPeer_IsRefusedByAnEncryptingTransport()
    {
        await using var server = Start();
        await using var client = Start(configure: o => o.Encrypt = false);
        var ex = await Assert.ThrowsAsync<PeerRefusedException>(() => client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long));
        Assert.Contains("refused the connection: this peer requires an encrypted channel", ex.Message);
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
