using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Threading.Channels;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Swarm.Checkpoints;
using Swarm.Engine;
using Swarm.Model;
using Swarm.Node.Telemetry;
using Swarm.Protocol;
using Swarm.Telemetry;
using Swarm.Transport;
using static TorchSharp.torch;

namespace Swarm.Node;

/// <summary>
/// The worker daemon: registers with the coordinator (re-registering with back-off if it restarts),
/// loads the layer range it is given or pinned to, serves prefill/decode steps of many sessions on one
/// compute thread, forwards hidden states to the next hop (the last hop samples and replies to the
/// coordinator), sends heartbeats, and on shutdown drains: it tells the coordinator it is leaving and
/// finishes the steps it already accepted.
/// </summary>
public sealed partial class NodeDaemon : BackgroundService
{
    private abstract record Work;
    private sealed record LoadWork(LayerRange Range, long AssignmentId) : Work;
    private sealed record StepWork(ForwardRequest Request, Envelope Envelope, long Enqueued) : Work;
    private sealed record CloseWork(long SessionId) : Work;
    private sealed record ExpireWork : Work;

    private readonly NodeOptions _options;
    private readonly ILogger _logger;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly Channel<Work> _work = Channel.CreateBounded<Work>(new BoundedChannelOptions(4096) { SingleReader = true });
    private readonly ConcurrentDictionary<string, Task<IPeer>> _peers = new();
    private readonly TaskCompletionSource _computeDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private ITransport? _transport;
    private IPeer? _coordinator;
    private IPEndPoint _coordinatorEndPoint = null!;
    private Checkpoint? _checkpoint;
    private StageHost? _host;
    private volatile NodeState _state = NodeState.Idle;
    private int _nodeId;
    private int _inFlight;
    private long _tokensServed;
    private double _layerTokensPerSecond;
    private ScalarType _dtype;
    private readonly Stopwatch _uptime = Stopwatch.StartNew();
    private volatile Heartbeat? _lastHeartbeat;
    private IDisposable? _observed;
    private TimeSpan _heartbeatInterval = TimeSpan.FromMilliseconds(500);

    public NodeDaemon(NodeOptions options, ILogger<NodeDaemon> logger, IHostApplicationLifetime lifetime)
    {
        _options = options; _logger = logger; _lifetime = lifetime;
    }

    /// <summary>Id the coordinator gave this node (0 before registration).</summary>
    public int NodeId => _nodeId;

    /// <summary>Where this node listens for node-to-node traffic.</summary>
    public IPEndPoint? DataEndPoint => _transport?.LocalEndPoint;

    // Read by NodeInstrumentation's observable gauges (any thread).
    internal Heartbeat? LastHeartbeat => _lastHeartbeat;
    internal int InFlight => Volatile.Read(ref _inFlight);
    internal NodeState State => _state;
    internal TransportCounters? TransportCounters => _transport?.Counters;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            await RunAsync(stoppingToken);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested) { }
        catch (Exception e) when (e is CheckpointException or TorchLoadException or PeerRefusedException or ArgumentException)
        {
            LogFatal(e.Message);
            Environment.ExitCode = 1;
            _lifetime.StopApplication();
        }
    }

    private async Task RunAsync(CancellationToken ct)
    {
        NodeOptions.TryParseEndPoint(_options.Coordinator, out var coord);
        _coordinatorEndPoint = coord!;
        NodeOptions.TryParseEndPoint(_options.Listen, out var listen);
        _dtype = _options.Dtype == "bf16" ? ScalarType.BFloat16 : ScalarType.Float32;
        TorchRuntime.Initialize(_options.Threads);
        _checkpoint = Checkpoint.Open(_options.Model);
        if (string.IsNullOrEmpty(_options.Secret)) LogNoSecret();
        _transport = LiteNetTransport.Start(new TransportOptions { BindAddress = listen!.Address, Port = listen.Port, Secret = _options.Secret }, _logger);
        _transport.PeerDisconnected += OnPeerDisconnected;
        _observed = NodeInstrumentation.Observe(this);
        var compute = new Thread(ComputeLoop) { IsBackground = true, Name = "swarm-stage-compute" };
        compute.Start();

        _layerTokensPerSecond = SelfBenchmark.LayerTokensPerSecond(_checkpoint.Config, _dtype);
        LogStarted(_transport.LocalEndPoint.ToString(), _layerTokensPerSecond);
        if (_options.Layers is not null)
        {
            NodeOptions.TryParseRange(_options.Layers, out int a, out int b);
            if (b > _checkpoint.Config.NumLayers)
                throw new ArgumentException($"--layers {_options.Layers}: the model has only {_checkpoint.Config.NumLayers} layers");
            await _work.Writer.WriteAsync(new LoadWork(new LayerRange(a, b), 0), ct);
        }

        await RegisterAsync(ct);
        var heartbeats = HeartbeatLoopAsync(ct);
        var expiry = ExpiryLoopAsync(ct);
        await foreach (var msg in _transport.Inbound.ReadAllAsync(ct))
            Dispatch(msg);
        await Task.WhenAll(heartbeats, expiry);
    }

    private string ModelId => $"gpt_neox:{_checkpoint!.Config.NumLayers}x{_checkpoint.Config.HiddenSize}x{_checkpoint.Config.VocabSize}";

    /// <summary>Connects to the coordinator and registers; retries with exponential back-off (capped at 5 s).</summary>
    private async Task RegisterAsync(CancellationToken ct)
    {
        var delay = TimeSpan.FromMilliseconds(200);
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            try
            {
                var peer = await _transport!.ConnectAsync(_coordinatorEndPoint, ct);
                LayerRange? pinned = null;
                if (_options.Layers is not null && NodeOptions.TryParseRange(_options.Layers, out int a, out int b)) pinned = new LayerRange(a, b);
                var hello = new Hello
                {
                    NodeName = _options.Name ?? $"{Environment.MachineName}:{_transport.LocalEndPoint.Port}",
                    MemoryBudgetBytes = _options.MemoryBytes,
                    Device = "cpu",
                    Threads = _options.Threads > 0 ? _options.Threads : Environment.ProcessorCount,
                    LayerTokensPerSecond = _layerTokensPerSecond,
                    PinnedRange = pinned,
                    HeldRange = _host is null ? null : _host.Range,
                    DataEndpoint = (_options.Advertise ?? _transport.LocalEndPoint.ToString()),
                    ModelId = ModelId,
                };
                var reply = await peer.RequestAsync(Envelope.Create(hello), TimeSpan.FromSeconds(10), ct);
                switch (reply.Body)
                {
                    case Welcome w:
                        _nodeId = w.NodeId;
                        if (w.HeartbeatIntervalMs > 0) _heartbeatInterval = TimeSpan.FromMilliseconds(w.HeartbeatIntervalMs);
                        _coordinator = peer;
                        LogRegistered(w.NodeId, _coordinatorEndPoint.ToString());
                        return;
                    case Refused r:
                        throw new PeerRefusedException($"the coordinator refused this node: {r.Reason}");
                    default:
                        throw new PeerDisconnectedException($"unexpected reply {reply.Body.GetType().Name} to Hello");
                }
            }
            catch (PeerRefusedException) { throw; }
            catch (Exception e) when (e is PeerDisconnectedException or TimeoutException)
            {
                LogCoordinatorUnreachable(_coordinatorEndPoint.ToString(), e.Message, delay.TotalMilliseconds);
                await Task.Delay(delay, ct);
                delay = TimeSpan.FromMilliseconds(Math.Min(5000, delay.TotalMilliseconds * 2));
            }
        }
    }

    private void OnPeerDisconnected(IPeer peer, string reason)
    {
        foreach (var (key, task) in _peers)
            if (task.IsCompletedSuccessfully && ReferenceEquals(task.Result, peer)) _peers.TryRemove(key, out _);
        if (!ReferenceEquals(peer, _coordinator) || _stopping) return;
        _coordinator = null;
        LogCoordinatorLost(reason);
        _ = Task.Run(async () =>
        {
            try { await RegisterAsync(_stoppingCts.Token); }
            catch (Exception e) when (e is OperationCanceledException or PeerRefusedException) { LogFatal(e.Message); }
        });
    }

    private readonly CancellationTokenSource _stoppingCts = new();
    private volatile bool _stopping;

    private void Dispatch(InboundMessage msg)
    {
        switch (msg.Envelope.Body)
        {
            case ForwardRequest req:
                if (_state == NodeState.Draining && req.StartPosition == 0)
                {
                    Reply(req, ErrorCode.ShuttingDown, "this node is draining and takes no new sessions");
                    return;
                }
                Interlocked.Increment(ref _inFlight);
                if (!_work.Writer.TryWrite(new StepWork(req, msg.Envelope, Stopwatch.GetTimestamp())))
                {
                    Interlocked.Decrement(ref _inFlight);
                    Reply(req, ErrorCode.Overloaded, "step queue full");
                }
                break;
            case AssignRange a:
                _work.Writer.TryWrite(new LoadWork(a.Range, a.AssignmentId));
                break;
            case CloseSession c:
                _work.Writer.TryWrite(new CloseWork(c.SessionId));
                break;
            case Drain d:
                LogDrain(d.Reason);
                _state = NodeState.Draining;
                break;
            case Welcome or Ack:
                break;
            default:
                LogUnexpected(msg.Envelope.Body.GetType().Name, msg.Peer.RemoteEndPoint.ToString());
                break;
        }
    }

    private void Reply(ForwardRequest req, ErrorCode code, string message) =>
        SendToCoordinator(new StepFailed { JobId = req.JobId, SessionId = req.SessionId, Step = req.Step, NodeId = _nodeId, Code = code, Message = message }, req.SessionId);

    private void SendToCoordinator(IMessage body, long sessionId = 0)
    {
        var peer = _coordinator;
        if (peer is null) { LogDroppedNoCoordinator(body.GetType().Name); return; }
        try { peer.Send(Envelope.Create(body, sessionId)); }
        catch (PeerDisconnectedException e) { LogDroppedNoCoordinator($"{body.GetType().Name} ({e.Message})"); }
    }

    /// <summary>
    /// The compute thread: takes everything that arrived (steps are queued in the stage host, control work runs at
    /// once), then runs one batched iteration over all ready steps and hands each finished step on; blocks only
    /// when there is nothing to run.
    /// </summary>
    private void ComputeLoop()
    {
        using var inference = inference_mode();
        try
        {
            while (true)
            {
                while (_work.Reader.TryRead(out var w))
                {
                    try { Execute(w); }
                    catch (Exception e) { LogComputeError(e.GetType().Name, e.Message); }
                }
                if (_host is { HasWork: true } host)
                {
                    long before = host.Stats.Iterations;
                    int finished = 0;
                    try
                    {
                        foreach (var c in host.RunIteration()) { Complete(c); finished++; }
                        if (host.Stats.Iterations != before) NodeInstrumentation.RecordBatch(host.Stats.LastBatch);
                    }
                    catch (Exception e) { LogComputeError(e.GetType().Name, e.Message); }
                    // Never spin: if nothing could run (should not happen), wait a little for new work.
                    if (finished == 0 && host.Stats.Iterations == before)
                        Task.WhenAny(_work.Reader.WaitToReadAsync().AsTask(), Task.Delay(10)).GetAwaiter().GetResult();
                    continue;
                }
                if (!_work.Reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult()) break;
            }
        }
        finally
        {
            if (_host is not null) foreach (var c in _host.Abort(ErrorCode.ShuttingDown, "the node is stopping")) Complete(c);
            _host?.Dispose();
            _host = null;
            _computeDone.TrySetResult();
        }
    }

    private void Execute(Work w)
    {
        switch (w)
        {
            case LoadWork load: Load(load); break;
            case StepWork step: Step(step); break;
            case CloseWork close: _host?.Close(close.SessionId); break;
            case ExpireWork:
                int n = _host?.ExpireIdle(TimeSpan.FromSeconds(_options.SessionTtlSeconds)) ?? 0;
                if (n > 0) LogExpired(n);
                break;
        }
    }

    private void Load(LoadWork w)
    {
        if (_host is not null && _host.Range.Equals(w.Range))
        {
            SendToCoordinator(Ready(w.AssignmentId));
            return;
        }
        _state = NodeState.Loading;
        var sw = Stopwatch.StartNew();
        var old = _host;
        _host = null;
        if (old is not null) foreach (var c in old.Abort(ErrorCode.RangeNotLoaded, $"this node now loads layers {w.Range}")) Complete(c);
        old?.Dispose(); // sessions on the old range are gone; the coordinator re-routes their jobs
        var model = StageModel.Load(_checkpoint!, w.Range.Start, w.Range.End, _dtype,
            Console.IsErrorRedirected ? null : new ConsoleProgress($"loading layers {w.Range}"),
            tensorParallel: _options.Tp == 1 && _options.Devices is null ? null : _options.TensorParallel());
        long kvBudget = Math.Max(0, _options.MemoryBytes - model.WeightBytes);
        _host = new StageHost(model, kvBudget);
        _state = NodeState.Ready;
        LogLoaded(w.Range.ToString(), model.WeightBytes / 1e6, sw.Elapsed.TotalMilliseconds, _host.KvTokenCapacity,
            model.TensorParallel?.ToString() ?? "tp=1");
        SendToCoordinator(Ready(w.AssignmentId));
    }

    private RangeReady Ready(long assignmentId) => new()
    {
        Range = _host!.Range,
        AssignmentId = assignmentId,
        KvBytesPerTokenPerLayer = KvBlockPool.BytesPerTokenPerLayer(_host.Model.Config, _host.Model.ComputeDtype),
        MaxKvTokens = _host.KvTokenCapacity,
    };

    /// <summary>A step handed to the stage host: the work item, and when the compute thread took it off the channel.</summary>
    private sealed record Submitted(StepWork Work, long At);

    private void Step(StepWork w)
    {
        if (_host is null)
        {
            Complete(new StepCompletion(w.Request, new Submitted(w, Stopwatch.GetTimestamp()), null,
                new StepException(ErrorCode.RangeNotLoaded, "no layers loaded yet")));
            return;
        }
        _host.Submit(w.Request, new Submitted(w, Stopwatch.GetTimestamp()));
    }

    /// <summary>
    /// Hands a finished step on — its token to the coordinator, its hidden states to the next hop, or its error to the
    /// coordinator — and records it: a <c>stage.forward</c> span back-dated to when the step arrived (steps finish
    /// out of order, one batched iteration at a time) and, for a sampled token, its <c>sample</c> child.
    /// </summary>
    private void Complete(StepCompletion c)
    {
        var req = c.Request;
        var (w, submitted) = (Submitted)c.State!;
        using var span = NodeInstrumentation.StartForward(w.Envelope, req, _nodeId);
        span?.SetStartTime(DateTime.UtcNow - Stopwatch.GetElapsedTime(w.Enqueued));
        span?.SetTag("swarm.queue_ms", Stopwatch.GetElapsedTime(w.Enqueued, submitted).TotalMilliseconds);
        string outcome = "ok";
        try
        {
            if (c.Error is { } error)
            {
                outcome = error.Code.ToString();
                if (error.Code == ErrorCode.Cancelled) return; // the session was closed: nobody waits for this step
                SwarmTelemetry.RecordFailure(span, NodeInstrumentation.StepFailedEvent, _nodeId.ToString(), error.Message, outcome);
                Reply(req, error.Code, error.Message);
                return;
            }
            var output = c.Output!;
            long positions = req.Input.Shape.Length > 1 ? req.Input.Shape[1] : 1;
            Interlocked.Add(ref _tokensServed, positions);
            NodeInstrumentation.Tokens.Add(positions);
            NodeInstrumentation.ForwardDuration.Record(output.Milliseconds / 1000, new KeyValuePair<string, object?>(SwarmTelemetry.StepKindTag, req.Kind.ToString().ToLowerInvariant()));
            var timings = req.Timings.Append(new StageTiming { NodeId = _nodeId, Milliseconds = output.Milliseconds }).ToArray();
            if (output.Token is int token)
            {
                using (var sample = NodeInstrumentation.Source.StartActivity(NodeInstrumentation.SampleSpan))
                {
                    sample?.SetStartTime(DateTime.UtcNow - TimeSpan.FromMilliseconds(output.SampleMilliseconds));
                    sample?.SetTag("swarm.sampling.greedy", req.Sampling.Temperature <= 0);
                    sample?.SetTag("swarm.token.position", req.StartPosition + positions);
                }
                var result = new TokenResult { JobId = req.JobId, SessionId = req.SessionId, Step = req.Step, TokenId = token, Timings = timings };
                if (_options.SimulateLatencyMs > 0)
                    _ = Task.Delay(_options.SimulateLatencyMs).ContinueWith(_ => SendToCoordinator(result, req.SessionId), TaskScheduler.Default);
                else
                    SendToCoordinator(result, req.SessionId);
            }
            else
            {
                var next = req.Route[1];
                var forward = req with { Route = req.Route[1..], Input = output.Hidden!, Timings = timings };
                span?.SetTag("swarm.next_node.id", next.NodeId);
                _ = ForwardAsync(next, forward, w.Envelope, span);
            }
        }
        finally
        {
            NodeInstrumentation.StepHandled(outcome);
            Interlocked.Decrement(ref _inFlight);
        }
    }

    /// <summary>
    /// Hands the step to the next hop. The envelope carries this node's <c>stage.forward</c> span as the parent
    /// (or, when this node does not trace, the context it received), so the next node's span joins the job's trace.
    /// </summary>
    private async Task ForwardAsync(Hop next, ForwardRequest forward, Envelope received, Activity? span)
    {
        string? traceParent = span?.Id ?? received.TraceParent;
        string? traceState = span is null ? received.TraceState : span.TraceStateString;
        try
        {
            if (_options.SimulateLatencyMs > 0) await Task.Delay(_options.SimulateLatencyMs);
            var peer = await PeerAsync(next.Endpoint);
            peer.Send(new Envelope { Body = forward, SessionId = received.SessionId, TraceParent = traceParent, TraceState = traceState });
        }
        catch (Exception e) when (e is PeerDisconnectedException or TimeoutException or OperationCanceledException or FormatException)
        {
            // Recorded only while the span is still open (the connection was already up); the coordinator's step span records it in any case.
            SwarmTelemetry.RecordFailure(span, NodeInstrumentation.StepFailedEvent, next.NodeId.ToString(), e.Message, nameof(ErrorCode.NextHopUnreachable));
            _peers.TryRemove(next.Endpoint, out _);
            SendToCoordinator(new StepFailed
            {
                JobId = forward.JobId, SessionId = forward.SessionId, Step = forward.Step, NodeId = next.NodeId,
                Code = ErrorCode.NextHopUnreachable, Message = $"node {next.NodeId} at {next.Endpoint} is unreachable: {e.Message}",
            }, forward.SessionId);
        }
    }

    private Task<IPeer> PeerAsync(string endpoint)
    {
        var task = _peers.GetOrAdd(endpoint, ep =>
        {
            if (!NodeOptions.TryParseEndPoint(ep, out var remote)) return Task.FromException<IPeer>(new FormatException($"bad endpoint '{ep}'"));
            return _transport!.ConnectAsync(remote!, _stoppingCts.Token);
        });
        if (task.IsFaulted || (task.IsCompletedSuccessfully && !task.Result.IsConnected))
        {
            _peers.TryRemove(endpoint, out _);
            return PeerAsync(endpoint);
        }
        return task;
    }

    private async Task HeartbeatLoopAsync(CancellationToken ct)
    {
        using var timer = new PeriodicTimer(_heartbeatInterval);
        long lastTokens = 0;
        var last = Stopwatch.StartNew();
        while (await timer.WaitForNextTickAsync(ct))
        {
            if (timer.Period != _heartbeatInterval) timer.Period = _heartbeatInterval;
            var stats = _host?.Stats;
            var range = _host?.Range;
            long tokens = Interlocked.Read(ref _tokensServed);
            double rate = (tokens - lastTokens) / last.Elapsed.TotalSeconds;
            lastTokens = tokens; last.Restart();
            SendToCoordinator(_lastHeartbeat = new Heartbeat
            {
                State = _state,
                InFlightSteps = Volatile.Read(ref _inFlight),
                Sessions = stats?.Sessions ?? 0,
                KvTokensUsed = stats?.KvTokensUsed ?? 0,
                KvTokensCapacity = stats?.KvTokenCapacity ?? 0,
                TokensPerSecond = rate,
                Range = range,
                KvBlocksUsed = stats?.KvBlocksUsed ?? 0,
                KvBlocksTotal = stats?.KvBlocksTotal ?? 0,
                WaitingSessions = stats?.WaitingSessions ?? 0,
            });
        }
    }

    private async Task ExpiryLoopAsync(CancellationToken ct)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(5));
        while (await timer.WaitForNextTickAsync(ct))
            _work.Writer.TryWrite(new ExpireWork());
    }

    /// <summary>Graceful stop (SIGTERM): announce the leave, stop taking new sessions, finish accepted steps.</summary>
    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        _stopping = true;
        _state = NodeState.Draining;
        _observed?.Dispose();
        var grace = TimeSpan.FromSeconds(5);
        SendToCoordinator(new Leave { Reason = "shutting down", GraceMs = (int)grace.TotalMilliseconds });
        var deadline = Stopwatch.StartNew();
        while (Volatile.Read(ref _inFlight) > 0 && deadline.Elapsed < grace)
            await Task.Delay(20, CancellationToken.None);
        LogStopping(Volatile.Read(ref _inFlight));
        _stoppingCts.Cancel();
        await base.StopAsync(cancellationToken);
        _work.Writer.TryComplete();
        await Task.WhenAny(_computeDone.Task, Task.Delay(5000, CancellationToken.None));
        if (_transport is not null) await _transport.DisposeAsync();
        _checkpoint?.Dispose();
    }

    [LoggerMessage(1, LogLevel.Information, "node listening on {Endpoint}; self-benchmark {LayerTokensPerSecond:F0} layer·tokens/s")]
    private partial void LogStarted(string endpoint, double layerTokensPerSecond);
    [LoggerMessage(2, LogLevel.Information, "registered with coordinator {Coordinator} as node {NodeId}")]
    private partial void LogRegistered(int nodeId, string coordinator);
    [LoggerMessage(3, LogLevel.Warning, "coordinator {Coordinator} unreachable ({Reason}); retrying in {DelayMs} ms")]
    private partial void LogCoordinatorUnreachable(string coordinator, string reason, double delayMs);
    [LoggerMessage(4, LogLevel.Warning, "lost the coordinator ({Reason}); re-registering")]
    private partial void LogCoordinatorLost(string reason);
    [LoggerMessage(5, LogLevel.Information, "loaded layers {Range}: {WeightMB:F1} MB of weights in {Ms:F0} ms; KV budget {KvTokens} tokens; {Parallel}")]
    private partial void LogLoaded(string range, double weightMB, double ms, long kvTokens, string parallel);
    [LoggerMessage(6, LogLevel.Error, "compute error: {Type}: {Message}")]
    private partial void LogComputeError(string type, string message);
    [LoggerMessage(7, LogLevel.Warning, "no swarm secret: accepting unauthenticated peers (loopback only)")]
    private partial void LogNoSecret();
    [LoggerMessage(8, LogLevel.Critical, "{Message}")]
    private partial void LogFatal(string message);
    [LoggerMessage(9, LogLevel.Information, "draining: {Reason}")]
    private partial void LogDrain(string reason);
    [LoggerMessage(10, LogLevel.Warning, "dropped unexpected {Kind} from {Peer}")]
    private partial void LogUnexpected(string kind, string peer);
    [LoggerMessage(11, LogLevel.Warning, "no coordinator connection: dropped {Kind}")]
    private partial void LogDroppedNoCoordinator(string kind);
    [LoggerMessage(12, LogLevel.Information, "expired {Count} idle session(s)")]
    private partial void LogExpired(int count);
    [LoggerMessage(13, LogLevel.Information, "stopping; {InFlight} step(s) still in flight")]
    private partial void LogStopping(int inFlight);
}
