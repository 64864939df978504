using System.Net;
using System.Threading.Channels;
using Swarm.Protocol;
using Swarm.Transport;

namespace Swarm.Tests.Node;

/// <summary>
/// A coordinator that speaks the real protocol over the real transport and decides nothing: it welcomes every
/// <see cref="Hello"/> with the next node id (from the first id it was given on) and records every message it receives.
/// </summary>
internal sealed class FakeCoordinator : IAsyncDisposable
{
    private readonly LiteNetTransport _transport;
    private readonly Channel<Envelope> _received = Channel.CreateUnbounded<Envelope>();
    private readonly Task _loop;
    private int _nextNodeId;

    private FakeCoordinator(int port, int firstNodeId)
    {
        _nextNodeId = firstNodeId;
        _transport = LiteNetTransport.Start(new TransportOptions { BindAddress = IPAddress.Loopback, Port = port });
        _loop = Task.Run(LoopAsync);
    }

    /// <summary>Starts one on <paramref name="port"/> (0: any free port).</summary>
    public static FakeCoordinator Start(int port = 0, int firstNodeId = 1) => new(port, firstNodeId);

    public IPEndPoint EndPoint => _transport.LocalEndPoint;

    private async Task LoopAsync()
    {
        await foreach (var msg in _transport.Inbound.ReadAllAsync())
        {
            if (msg.Envelope.Body is Hello)
                msg.Peer.Send(msg.Envelope.CreateReply(new Welcome { NodeId = _nextNodeId++, HeartbeatIntervalMs = 100 }));
            _received.Writer.TryWrite(msg.Envelope);
        }
    }

    /// <summary>The next message of kind <typeparamref name="T"/> received (others are skipped).</summary>
    public async Task<T> NextAsync<T>(TimeSpan? timeout = null) where T : IMessage
    {
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(20));
        while (true)
        {
            var envelope = await _received.Reader.ReadAsync(cts.Token);
            if (envelope.Body is T body) return body;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _transport.DisposeAsync();
        await _loop;
    }
}
