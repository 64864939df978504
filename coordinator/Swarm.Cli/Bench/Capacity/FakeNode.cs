using System.Net;
using Swarm.Protocol;
using Swarm.Transport;
using Swarm.Transport.Security;

namespace Swarm.Cli.Bench.Capacity;

/// <summary>What every simulated node of a <see cref="FakeSwarm"/> announces and how its stages answer.</summary>
/// <param name="ModelId">The coordinator's model id (<c>gpt_neox:L×H×V</c>): a node with another one is refused.</param>
/// <param name="LayerWeightBytes">Bytes one layer's weights cost the node (announced in Hello).</param>
/// <param name="KvBytesPerTokenPerLayer">KV bytes per token per layer (announced in Hello).</param>
/// <param name="MemoryBudgetBytes">Memory budget: how many layers fit decides the node's range.</param>
/// <param name="LayerTokensPerSecond">Throughput through one layer it announces.</param>
/// <param name="HopLatency">Fake compute time per hop of a step (zero: answer at once).</param>
/// <param name="VocabSize">Sampled token ids stay below this.</param>
internal sealed record FakeNodeProfile(string ModelId, long LayerWeightBytes, long KvBytesPerTokenPerLayer, long MemoryBudgetBytes,
    double LayerTokensPerSecond, TimeSpan HopLatency, int VocabSize);

/// <summary>
/// One simulated node speaking the real protocol to a real coordinator over its own UDP socket (a
/// <see cref="LiteNetTransport"/> with its own identity and Noise handshake): it registers (Hello → Welcome), reports every
/// assigned range ready at once (RangeReady, no weights), heartbeats at the interval the coordinator asked for, and
/// answers the steps it receives as a route's first hop. The hops after the first run inside the load generator: after
/// the fake latency of every hop, the route's <b>last</b> node sends the <see cref="TokenResult"/> to the coordinator over
/// its own connection, as a real last stage does. Node-to-node traffic never reaches the coordinator, so it is not
/// simulated on the wire.
/// </summary>
internal sealed class FakeNode : IAsyncDisposable
{
    private readonly FakeNodeProfile _profile;
    private readonly Func<int, FakeNode?> _byId;
    private readonly LiteNetTransport _transport;
    private readonly CancellationTokenSource _stop = new();
    private IPeer? _coordinator;
    private Task? _inbound, _heartbeats;
    private int _heartbeatMs = 500;
    private LayerRange? _range;
    private long _steps;

    /// <param name="profile">What the node announces and how fast its stages answer.</param>
    /// <param name="bind">Loopback address to bind (one per node, so the coordinator's per-address connect limit sees distinct sources).</param>
    /// <param name="byId">Finds the simulated node with a coordinator-assigned id (the route's last hop).</param>
    /// <param name="pump">The shared thread that runs this node's transport (a thousand nodes share a few).</param>
    public FakeNode(FakeNodeProfile profile, IPAddress bind, Func<int, FakeNode?> byId, TransportPump pump)
    {
        _profile = profile;
        _byId = byId;
        _transport = LiteNetTransport.Start(new TransportOptions
        {
            // Idle transports tick 10 times a second, not 200 (data still moves at once: receipts wake the pump, senders flush).
            BindAddress = bind, Port = 0, Identity = NodeIdentity.CreateEphemeral(), UpdateTimeMs = 100, Pump = pump,
        });
    }

    /// <summary>The id the coordinator gave this node (0 before registration).</summary>
    public int NodeId { get; private set; }

    /// <summary>Steps this node answered as the first hop.</summary>
    public long Steps => Interlocked.Read(ref _steps);

    /// <summary>
    /// Connects, registers and starts heartbeating; returns once the Welcome arrived. Like a real node, retries a failed
    /// connection with back-off (a connect now and then ends in LiteNetLib's PeerNotFound on a busy loopback).
    /// </summary>
    /// <exception cref="InvalidOperationException">The coordinator refused the node (a Refused reply).</exception>
    /// <exception cref="PeerDisconnectedException">Ten attempts failed.</exception>
    public async Task RegisterAsync(IPEndPoint coordinator, string name, CancellationToken ct)
    {
        var delay = TimeSpan.FromMilliseconds(200);
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                await TryRegisterAsync(coordinator, name, ct).ConfigureAwait(false);
                return;
            }
            // A handshake that timed out on a busy machine is a PeerRefusedException too: only a Refused reply is final.
            catch (Exception e) when (e is PeerDisconnectedException or TimeoutException && attempt < 10)
            {
                await Task.Delay(delay, ct).ConfigureAwait(false);
                delay = TimeSpan.FromTicks(Math.Min(TimeSpan.FromSeconds(2).Ticks, delay.Ticks * 2));
            }
        }
    }

    private async Task TryRegisterAsync(IPEndPoint coordinator, string name, CancellationToken ct)
    {
        if (_coordinator is not { IsConnected: true }) _coordinator = await _transport.ConnectAsync(coordinator, ct).ConfigureAwait(false);
        var hello = new Hello
        {
            NodeName = name, MemoryBudgetBytes = _profile.MemoryBudgetBytes, Device = "cpu", Threads = 1,
            LayerTokensPerSecond = _profile.LayerTokensPerSecond, DataEndpoint = _transport.LocalEndPoint.ToString(), ModelId = _profile.ModelId,
            LayerWeightBytes = _profile.LayerWeightBytes, KvBytesPerTokenPerLayer = _profile.KvBytesPerTokenPerLayer,
        };
        var reply = await _coordinator.RequestAsync(Envelope.Create(hello), TimeSpan.FromSeconds(30), ct).ConfigureAwait(false);
        if (reply.Body is Refused r) throw new InvalidOperationException($"the coordinator refused {name}: {r.Reason}");
        // A coordinator shedding load (its inbound queue was full) answers ErrorReply(Overloaded): a real node tries again.
        if (reply.Body is ErrorReply e) throw new TimeoutException($"the coordinator did not take {name}'s Hello: {e.Message}");
        var welcome = (Welcome)reply.Body;
        NodeId = welcome.NodeId;
        if (welcome.HeartbeatIntervalMs > 0) _heartbeatMs = welcome.HeartbeatIntervalMs;
        _inbound = Task.Run(() => InboundAsync(_stop.Token), CancellationToken.None);
        _heartbeats = Task.Run(() => HeartbeatsAsync(_stop.Token), CancellationToken.None);
    }

    private async Task InboundAsync(CancellationToken ct)
    {
        try
        {
            await foreach (var msg in _transport.Inbound.ReadAllAsync(ct).ConfigureAwait(false))
            {
                switch (msg.Envelope.Body)
                {
                    case AssignRange a:
                        _range = a.Range;
                        Send(new RangeReady { Range = a.Range, AssignmentId = a.AssignmentId, KvBytesPerTokenPerLayer = _profile.KvBytesPerTokenPerLayer, MaxKvTokens = 4096 });
                        break;
                    case ForwardRequest step:
                        Interlocked.Increment(ref _steps);
                        if (_profile.HopLatency <= TimeSpan.Zero) Answer(step);
                        else _ = AnswerLaterAsync(step, ct);
                        break;
                }
            }
        }
        catch (OperationCanceledException) { }
    }

    private async Task AnswerLaterAsync(ForwardRequest step, CancellationToken ct)
    {
        try
        {
            await Task.Delay(_profile.HopLatency * Math.Max(1, step.Route.Length), ct).ConfigureAwait(false);
            Answer(step);
        }
        catch (OperationCanceledException) { }
    }

    /// <summary>The route's last node sends the sampled token (a fixed function of job and step) to the coordinator.</summary>
    private void Answer(ForwardRequest step)
    {
        var last = step.Route.Length == 0 ? this : _byId(step.Route[^1].NodeId) ?? this;
        int token = (int)((step.JobId * 7919 + step.Step * 104729 + 13) % _profile.VocabSize);
        last.Send(new TokenResult { JobId = step.JobId, SessionId = step.SessionId, Step = step.Step, TokenId = token }, step.SessionId);
    }

    private void Send(IMessage body, long session = 0)
    {
        try { _coordinator?.Send(Envelope.Create(body, session)); }
        catch (PeerDisconnectedException) { }
    }

    private async Task HeartbeatsAsync(CancellationToken ct)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(_heartbeatMs));
        try
        {
            while (await timer.WaitForNextTickAsync(ct).ConfigureAwait(false))
                Send(new Heartbeat { State = NodeReadiness.Ready, Range = _range, KvTokensCapacity = 4096, LayerTokensPerSecond = _profile.LayerTokensPerSecond });
        }
        catch (OperationCanceledException) { }
    }

    /// <summary>Stops heartbeating and closes the socket (the coordinator sees a disconnect).</summary>
    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        foreach (var t in new[] { _inbound, _heartbeats })
            if (t is not null) await t.ConfigureAwait(false);
        await _transport.DisposeAsync().ConfigureAwait(false);
        _stop.Dispose();
    }
}
