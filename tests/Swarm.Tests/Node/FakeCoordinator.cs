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
    private readonly List<InboundMessage> _heldTensorRequests = [];
    private readonly TaskCompletionSource _firstTensorRequest = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Lock _answerGate = new();
    private readonly Task _loop;
    private readonly string _modelSource;
    private int _nextNodeId;
    private volatile IPeer? _node;
    private IMessage? _tensorAnswer;

    private FakeCoordinator(int port, int firstNodeId, string modelSource)
    {
        _nextNodeId = firstNodeId;
        _modelSource = modelSource;
        _transport = LiteNetTransport.Start(new TransportOptions { BindAddress = IPAddress.Loopback, Port = port });
        _loop = Task.Run(LoopAsync);
    }

    /// <summary>Starts one on <paramref name="port"/> (0: any free port).</summary>
    /// <param name="modelSource">Announced in every <see cref="Welcome"/> (a swarm whose nodes fetch their weights); default none.</param>
    public static FakeCoordinator Start(int port = 0, int firstNodeId = 1, string modelSource = "") => new(port, firstNodeId, modelSource);

    /// <summary>Sends <paramref name="body"/> to the node that registered last.</summary>
    public void SendToNode(IMessage body) => (_node ?? throw new InvalidOperationException("no node registered yet")).Send(Envelope.Create(body));

    /// <summary>
    /// Completes when a first <see cref="TensorRequest"/> was sent to it (posing as a peer): such requests are kept
    /// apart from other messages and held, unanswered, until <see cref="AnswerTensorRequests"/>.
    /// </summary>
    public Task WaitForTensorRequestAsync(TimeSpan timeout) => _firstTensorRequest.Task.WaitAsync(timeout);

    /// <summary>Answers every held and every later <see cref="TensorRequest"/> with <paramref name="answer"/>.</summary>
    public void AnswerTensorRequests(IMessage answer)
    {
        lock (_answerGate)
        {
            _tensorAnswer = answer;
            foreach (var held in _heldTensorRequests) held.Peer.Send(held.Envelope.CreateReply(answer));
            _heldTensorRequests.Clear();
        }
    }

    public IPEndPoint EndPoint => _transport.LocalEndPoint;

    private async Task LoopAsync()
    {
        await foreach (var msg in _transport.Inbound.ReadAllAsync())
        {
            if (msg.Envelope.Body is TensorRequest)
            {
                lock (_answerGate)
                {
                    if (_tensorAnswer is { } answer) msg.Peer.Send(msg.Envelope.CreateReply(answer));
                    else
                    {
                        _heldTensorRequests.Add(msg);
                        _firstTensorRequest.TrySetResult();
                    }
                }
                continue;
            }
            if (msg.Envelope.Body is Hello)
            {
                _node = msg.Peer;
                msg.Peer.Send(msg.Envelope.CreateReply(new Welcome { NodeId = _nextNodeId++, HeartbeatIntervalMs = 100, ModelSource = _modelSource }));
            }
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
