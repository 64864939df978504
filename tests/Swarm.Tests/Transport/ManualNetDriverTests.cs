using Microsoft.Extensions.Time.Testing;
using Swarm.Protocol;
using Swarm.Transport;
using Xunit;

namespace Swarm.Tests.Transport;

/// <summary>
/// A message costs work on its own peer only (<see cref="ManualNetDriver"/>): the server's clock is frozen, so LiteNetLib's
/// full update of every peer (the tick) never runs, and requests still travel and are answered, through real sockets and
/// the real Noise channel, by flushing the one peer concerned.
/// </summary>
public class ManualNetDriverTests
{
    private static readonly TimeSpan Long = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task Messages_WithManyPeersAndNoTick_TravelByFlushingTheirOwnPeerOnly()
    {
        const int peers = 24, requests = 100;
        var frozen = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var server = LiteNetTransport.Start(new TransportOptions { Secret = "s3cret", Time = frozen, ConnectBurst = 2 * peers });
        var echo = Task.Run(async () =>
        {
            await foreach (var m in server.Inbound.ReadAllAsync())
                m.Peer.Send(m.Envelope.CreateReply(new Ack()));
        });
        var clients = new List<LiteNetTransport>();
        try
        {
            var connected = new List<IPeer>();
            for (int i = 0; i < peers; i++)
            {
                var client = LiteNetTransport.Start(new TransportOptions { Secret = "s3cret" });
                clients.Add(client);
                connected.Add(await client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long));
            }
            Assert.Equal(peers, server.Peers.Count);

            long flushes0 = server.Driver.Flushes;
            for (int i = 0; i < requests; i++)
            {
                var reply = await connected[i % 2].RequestAsync(Envelope.Create(new Heartbeat { State = NodeReadiness.Ready }), Long);
                Assert.IsType<Ack>(reply.Body);
            }
            long flushes = server.Driver.Flushes - flushes0;

            Assert.Equal(0, server.Driver.Ticks); // no update of every peer, ever: each message moved its own peer only
            Assert.InRange(flushes, requests, 3L * requests); // each reply was flushed; at most a few flushes per message, not one per peer
        }
        finally
        {
            foreach (var client in clients) await client.DisposeAsync();
        }
    }

    [Fact]
    public async Task Tick_WithTheClockRunning_UpdatesEveryPeer()
    {
        await using var server = LiteNetTransport.Start(new TransportOptions { Secret = "s3cret", UpdateTimeMs = 1 });
        await using var client = LiteNetTransport.Start(new TransportOptions { Secret = "s3cret" });
        await client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long);
        long ticks0 = server.Driver.Ticks;
        var deadline = DateTime.UtcNow + Long;
        while (server.Driver.Ticks < ticks0 + 3 && DateTime.UtcNow < deadline) await Task.Delay(10);
        Assert.True(server.Driver.Ticks >= ticks0 + 3, "the poll thread runs LiteNetLib's tick on the clock");
    }
}
