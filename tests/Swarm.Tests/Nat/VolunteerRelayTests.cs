using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Swarm.Node;
using Swarm.Protocol;
using Swarm.Transport;
using Xunit;

namespace Swarm.Tests.Nat;

/// <summary>A node's relay for others (<see cref="VolunteerRelay"/>) on loopback: what it opens, refuses, carries and reports.</summary>
public sealed class VolunteerRelayTests
{
    private static TransportOptions Options() => new() { BindAddress = IPAddress.Loopback, Secret = "relay" };

    [Fact]
    public async Task OpenedHop_CarriesTheEndToEndChannel_AndCountsIt_ButNothingOpensBeforeTheCoordinatorAccepts()
    {
        var told = new ConcurrentQueue<RelayControl>();
        using var relay = new VolunteerRelay(IPAddress.Loopback, told.Enqueue, NullLogger.Instance);
        var open = new RelayControl { Action = RelayControlAction.Open, HopId = 5, Upstream = "127.0.0.1", Downstream = "127.0.0.1" };

        var refused = relay.Handle(open)!;
        Assert.Equal((RelayControlAction.Closed, 5L), (refused.Action, refused.HopId));
        Assert.Contains("does not relay", refused.Reason);

        relay.Registered(accepted: true);
        var opened = relay.Handle(open)!;
        Assert.Equal((RelayControlAction.Opened, 5L), (opened.Action, opened.HopId));
        Assert.Null(MessageValidator.Validate(opened));
        Assert.Equal(RelayControlAction.Closed, relay.Handle(open)!.Action); // the same hop twice

        await using var downstream = LiteNetTransport.Start(Options());
        await using var upstream = LiteNetTransport.Start(Options());
        await downstream.PunchAsync(new IPEndPoint(IPAddress.Loopback, opened.DownstreamPort));
        var peer = await upstream.ConnectAsync(new IPEndPoint(IPAddress.Loopback, opened.UpstreamPort), downstream.LocalKey);
        var marker = new Heartbeat { State = NodeReadiness.Ready, KvTokensUsed = 987_654_321 };
        peer.Send(Envelope.Create(marker));
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        Assert.Equal(marker, (await downstream.Inbound.ReadAsync(cts.Token)).Envelope.Body);
        var usage = relay.Usage;
        Assert.True(usage is { Hops: 1, Datagrams: > 0, Bytes: > 0 }, usage.ToString());

        Assert.Null(relay.Handle(new RelayControl { Action = RelayControlAction.Close, HopId = 5 }));
        Assert.Equal(0, relay.Usage.Hops);
        Assert.True(relay.Usage.Bytes >= usage.Bytes); // a closed hop's bytes stay counted
        Assert.Empty(told); // closed by the coordinator: nothing to tell it

        Assert.Equal(RelayControlAction.Opened, relay.Handle(open with { HopId = 6 })!.Action);
        relay.Registered(accepted: false); // a coordinator restart: its old hops are closed, and it declined this time
        Assert.Equal(0, relay.Usage.Hops);
        Assert.Equal(RelayControlAction.Closed, relay.Handle(open with { HopId = 7 })!.Action);
    }
}
