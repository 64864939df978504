using System.Net;
using System.Net.Sockets;
using Swarm.Protocol;
using Swarm.Transport;
using Swarm.Transport.Nat;
using Xunit;

namespace Swarm.Tests.Nat;

/// <summary>The pieces of NAT traversal on loopback: the reachability probe and the relay (how hops are planned: <see cref="HopPlanningTests"/>).</summary>
public sealed class NatTraversalTests
{
    private static TransportOptions Options(string address = "127.0.0.1") => new() { BindAddress = IPAddress.Parse(address), Secret = "nat" };

    [Fact]
    public async Task ReachabilityProbe_AListeningTransportAnswers_AndASilentPortDoesNot()
    {
        await using var node = LiteNetTransport.Start(Options());
        Assert.True(await ReachabilityProbe.ProbeAsync(IPAddress.Loopback, node.LocalEndPoint, TimeSpan.FromSeconds(2)));

        using var silent = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp); // bound, never answers
        silent.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        Assert.False(await ReachabilityProbe.ProbeAsync(IPAddress.Loopback, (IPEndPoint)silent.LocalEndPoint!, TimeSpan.FromMilliseconds(400)));
    }

    [Fact]
    public async Task RelayedHop_CarriesTheEndToEndChannel_AndTheRelayCannotPassForTheDownstreamNode()
    {
        using var relay = new UdpRelay(IPAddress.Loopback, TimeSpan.FromSeconds(30));
        await using var downstream = LiteNetTransport.Start(Options());
        await using var upstream = LiteNetTransport.Start(Options());
        await using var impostor = LiteNetTransport.Start(Options());
        var allocation = relay.Allocate(IPAddress.Loopback, IPAddress.Loopback);
        await downstream.PunchAsync(allocation.DownstreamSide);

        // The upstream reaches the downstream node's key through the relay, and a message goes through whole.
        var peer = await upstream.ConnectAsync(allocation.UpstreamSide, downstream.LocalKey);
        Assert.True(peer.RemoteKey.Span.SequenceEqual(downstream.LocalKey.Span));
        var marker = new Heartbeat { State = NodeReadiness.Ready, KvTokensUsed = 123_456_789 };
        peer.Send(Envelope.Create(marker));
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var received = await downstream.Inbound.ReadAsync(cts.Token);
        Assert.Equal(marker, received.Envelope.Body);
        Assert.True(allocation.BytesForwarded > 0);

        // Another allocation whose downstream side is held by an impostor: pinning the real key refuses it.
        var second = relay.Allocate(IPAddress.Loopback, IPAddress.Loopback);
        await impostor.PunchAsync(second.DownstreamSide);
        var refused = await Assert.ThrowsAsync<PeerRefusedException>(() => upstream.ConnectAsync(second.UpstreamSide, downstream.LocalKey));
        Assert.Contains("not the", refused.Message);
    }

    [Fact]
    public async Task RelayAllocation_ForwardsOnlyForItsRegisteredAddresses()
    {
        using var relay = new UdpRelay(IPAddress.Loopback, TimeSpan.FromSeconds(30));
        await using var downstream = LiteNetTransport.Start(Options());
        var strangerOptions = Options("127.0.0.3");
        strangerOptions.ConnectTimeout = TimeSpan.FromSeconds(1);
        await using var stranger = LiteNetTransport.Start(strangerOptions);
        var allocation = relay.Allocate(IPAddress.Parse("127.0.0.2"), IPAddress.Loopback); // the upstream must come from 127.0.0.2
        await downstream.PunchAsync(allocation.DownstreamSide);
        await Assert.ThrowsAnyAsync<PeerDisconnectedException>(() => stranger.ConnectAsync(allocation.UpstreamSide, downstream.LocalKey));
        Assert.Equal(0, allocation.DatagramsForwarded);
    }
}
