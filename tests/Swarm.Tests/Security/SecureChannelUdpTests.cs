using System.Net;
using System.Net.Sockets;
using Swarm.Transport.Security;
using Xunit;

namespace Swarm.Tests.Security;

/// <summary>Two peers run the handshake and exchange records over real UDP sockets on 127.0.0.1.</summary>
public sealed class SecureChannelUdpTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);
    private readonly Socket _a = Bind();
    private readonly Socket _b = Bind();
    private readonly NodeIdentity _node = NodeIdentity.CreateEphemeral();
    private readonly NodeIdentity _coordinator = NodeIdentity.CreateEphemeral();

    public void Dispose()
    {
        _a.Dispose();
        _b.Dispose();
        _node.Dispose();
        _coordinator.Dispose();
    }

    private static Socket Bind()
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return socket;
    }

    private static async Task<byte[]> ReceiveAsync(Socket socket)
    {
        using var cts = new CancellationTokenSource(Timeout);
        var buffer = new byte[65536];
        var result = await socket.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), cts.Token);
        return buffer[..result.ReceivedBytes];
    }

    /// <summary>Drives one side: sends its first frame (initiator), then answers every datagram until done.</summary>
    private static async Task<SecureHandshake> DriveAsync(SecureHandshake handshake, Socket socket, EndPoint peer)
    {
        if (handshake.IsInitiator) await socket.SendToAsync(handshake.Start(), peer);
        while (handshake.Status == HandshakeStatus.InProgress)
        {
            var step = handshake.Receive(await ReceiveAsync(socket));
            if (step.Reply != null) await socket.SendToAsync(step.Reply, peer);
        }
        return handshake;
    }

    private async Task<(SecureHandshake Initiator, SecureHandshake Responder)> RunAsync(SecureChannelOptions node, SecureChannelOptions coordinator)
    {
        var responder = DriveAsync(SecureHandshake.CreateResponder(_coordinator, coordinator), _b, _a.LocalEndPoint!);
        var initiator = DriveAsync(SecureHandshake.CreateInitiator(_node, node), _a, _b.LocalEndPoint!);
        await Task.WhenAll(responder, initiator).WaitAsync(2 * Timeout);
        return (await initiator, await responder);
    }

    [Fact]
    public async Task Handshake_OverUdp_EstablishesAndCarriesRecordsBothWays()
    {
        var psk = Enumerable.Repeat((byte)9, 32).ToArray();
        var (i, r) = await RunAsync(new() { Psk = psk, ExpectedRemoteKey = _coordinator.PublicKey.ToArray() }, new() { Psk = psk });
        using (i) using (r)
        using (var client = i.Channel!)
        using (var server = r.Channel!)
        {
            Assert.Equal(_node.PublicKey.ToArray(), server.RemoteStaticKey.ToArray());
            var prompt = "12345678 tokens of a secret prompt"u8.ToArray();
            var record = client.Seal(prompt);
            Assert.Equal(-1, record.AsSpan().IndexOf(prompt.AsSpan(0, 8)));
            await _a.SendToAsync(record, _b.LocalEndPoint!);
            Assert.Equal(OpenResult.Opened, server.TryOpen(await ReceiveAsync(_b), out var received));
            Assert.Equal(prompt, received);

            await _b.SendToAsync(server.Seal("pong"u8), _a.LocalEndPoint!);
            Assert.Equal(OpenResult.Opened, client.TryOpen(await ReceiveAsync(_a), out received));
            Assert.Equal("pong"u8.ToArray(), received);

            await _a.SendToAsync(record, _b.LocalEndPoint!); // a relay replays the datagram
            Assert.Equal(OpenResult.Replayed, server.TryOpen(await ReceiveAsync(_b), out _));
            Assert.Equal(1, server.Counters.RejectedReplayed);
        }
    }

    [Fact]
    public async Task Handshake_OverUdp_WrongPsk_FailsOnBothSidesWithClearErrors()
    {
        var (i, r) = await RunAsync(new() { Psk = Enumerable.Repeat((byte)1, 32).ToArray() },
                                    new() { Psk = Enumerable.Repeat((byte)2, 32).ToArray() });
        using (i) using (r)
        {
            Assert.Equal(HandshakeStatus.Failed, r.Status);
            Assert.StartsWith("the swarm secrets differ", r.Error);
            Assert.Equal(HandshakeStatus.Failed, i.Status);
            Assert.Equal("the peer refused the handshake: the swarm secrets differ", i.Error);
            Assert.Null(i.Channel);
            Assert.Null(r.Channel);
        }
    }

    [Fact]
    public async Task Handshake_OverUdp_PinnedKeyMismatch_FailsOnBothSidesWithClearErrors()
    {
        using var expected = NodeIdentity.CreateEphemeral();
        var (i, r) = await RunAsync(new() { ExpectedRemoteKey = expected.PublicKey.ToArray() }, new());
        using (i) using (r)
        {
            Assert.Equal(HandshakeStatus.Failed, i.Status);
            Assert.Equal($"the peer's key {_coordinator.Fingerprint} is not the pinned key {expected.Fingerprint}", i.Error);
            Assert.Equal(HandshakeStatus.Failed, r.Status);
            Assert.Contains("is not the key this peer pinned", r.Error);
        }
    }
}
