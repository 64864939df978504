using System.Collections.Concurrent;
using System.Net;
using Swarm.Model;
using Swarm.Protocol;
using Swarm.Transport;
using Xunit;

namespace Swarm.Tests.Telemetry;

/// <summary>
/// A node that speaks the real protocol over the real transport but computes nothing: it registers with
/// every layer pinned, heartbeats, answers each step with a token (100 + step), and fails the first
/// attempt of <see cref="FailStep"/> with <see cref="ErrorCode.Overloaded"/>. It keeps the trace context
/// of every <see cref="ForwardRequest"/> envelope it receives.
/// </summary>
internal sealed class FakeNode : IAsyncDisposable
{
    private readonly LiteNetTransport _transport;
    private readonly CancellationTokenSource _stop = new();
    private readonly ModelConfig _config;
    private IPeer? _coordinator;
    private Task? _inbound, _heartbeats;
    private int _nodeId, _failed;

    /// <summary>Step whose first attempt fails (-1: none).</summary>
    public int FailStep { get; init; } = -1;

    /// <summary>(step, traceparent) of every step received, in arrival order.</summary>
    public ConcurrentQueue<(int Step, string? TraceParent)> Received { get; } = new();

    public int NodeId => _nodeId;

    public FakeNode(ModelConfig config)
    {
        _config = config;
        _transport = LiteNetTransport.Start(new TransportOptions { BindAddress = IPAddress.Loopback, Port = 0 });
    }

    public async Task RegisterAsync(IPEndPoint coordinator, CancellationToken ct)
    {
        var peer = await _transport.ConnectAsync(coordinator, ct);
        var hello = new Hello
        {
            NodeName = "fake", MemoryBudgetBytes = 1L << 30, Device = "cpu", Threads = 1, LayerTokensPerSecond = 1000,
            PinnedRange = new LayerRange(0, _config.NumLayers), DataEndpoint = _transport.LocalEndPoint.ToString(),
            ModelId = $"gpt_neox:{_config.NumLayers}x{_config.HiddenSize}x{_config.VocabSize}",
        };
        var reply = await peer.RequestAsync(Envelope.Create(hello), TimeSpan.FromSeconds(10), ct);
        _nodeId = Assert.IsType<Welcome>(reply.Body).NodeId;
        _coordinator = peer;
        _inbound = Task.Run(() => InboundAsync(_stop.Token));
        _heartbeats = Task.Run(() => HeartbeatsAsync(_stop.Token));
    }

    private async Task InboundAsync(CancellationToken ct)
    {
        try
        {
            await foreach (var msg in _transport.Inbound.ReadAllAsync(ct))
            {
                switch (msg.Envelope.Body)
                {
                    case AssignRange a:
                        msg.Peer.Send(Envelope.Create(new RangeReady { Range = a.Range, AssignmentId = a.AssignmentId, KvBytesPerTokenPerLayer = 1, MaxKvTokens = 1000 }));
                        break;
                    case ForwardRequest req:
                        Received.Enqueue((req.Step, msg.Envelope.TraceParent));
                        IMessage answer = req.Step == FailStep && Interlocked.Exchange(ref _failed, 1) == 0
                            ? new StepFailed { JobId = req.JobId, SessionId = req.SessionId, Step = req.Step, NodeId = _nodeId, Code = ErrorCode.Overloaded, Message = "fake overload" }
                            : new TokenResult { JobId = req.JobId, SessionId = req.SessionId, Step = req.Step, TokenId = 100 + req.Step, Timings = [new StageTiming { NodeId = _nodeId, Milliseconds = 1 }] };
                        msg.Peer.Send(new Envelope { Body = answer, SessionId = req.SessionId, TraceParent = msg.Envelope.TraceParent });
                        break;
                }
            }
        }
        catch (OperationCanceledException) { }
    }

    private async Task HeartbeatsAsync(CancellationToken ct)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(200));
        try
        {
            while (await timer.WaitForNextTickAsync(ct))
            {
                try
                {
                    _coordinator!.Send(Envelope.Create(new Heartbeat
                    {
                        State = NodeReadiness.Ready, KvTokensUsed = 7, KvTokensCapacity = 1000, Range = new LayerRange(0, _config.NumLayers),
                    }));
                }
                catch (PeerDisconnectedException) { return; }
            }
        }
        catch (OperationCanceledException) { }
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        foreach (var t in new[] { _inbound, _heartbeats })
            if (t is not null) await Task.WhenAny(t, Task.Delay(2000));
        await _transport.DisposeAsync();
        _stop.Dispose();
    }
}
