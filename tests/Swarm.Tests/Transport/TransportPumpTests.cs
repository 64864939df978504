using Swarm.Protocol;
using Swarm.Transport;
using Xunit;

namespace Swarm.Tests.Transport;

/// <summary>Transports run by one shared <see cref="TransportPump"/> thread connect, authenticate, talk both ways and stop.</summary>
public class TransportPumpTests
{
    private static readonly TimeSpan Long = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task PumpedTransports_ConnectExchangeAndStop()
    {
        const int clients = 8;
        using var pump = new TransportPump("test-pump", tickMs: 20);
        await using var server = LiteNetTransport.Start(new TransportOptions { Secret = "s3cret" });
        var echo = Task.Run(async () =>
        {
            await foreach (var m in server.Inbound.ReadAllAsync())
                m.Peer.Send(m.Envelope.CreateReply(new Ack()));
        });
        var pumped = new List<LiteNetTransport>();
        try
        {
            for (int i = 0; i < clients; i++)
                pumped.Add(LiteNetTransport.Start(new TransportOptions { Secret = "s3cret", Pump = pump, UpdateTimeMs = 20 }));
            foreach (var client in pumped)
            {
                var peer = await client.ConnectAsync(server.LocalEndPoint).WaitAsync(Long);
                for (int i = 0; i < 5; i++)
                    Assert.IsType<Ack>((await peer.RequestAsync(Envelope.Create(new Heartbeat { State = NodeReadiness.Ready }), Long)).Body);
            }
            Assert.Equal(clients, server.Peers.Count);
            Assert.All(pumped, c => Assert.Equal(5, c.Counters.MessagesReceived));
        }
        finally
        {
            foreach (var client in pumped) await client.DisposeAsync().AsTask().WaitAsync(Long); // released by the pump, not stuck
        }
    }
}
