using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Swarm.Checkpoints;
using Swarm.Model;
using Swarm.Node.Drafting;
using Swarm.Node.Telemetry;
using Swarm.Protocol;
using static TorchSharp.torch;

namespace Swarm.Node;

/// <summary>Where a step came from: the envelope it arrived in (trace context) and when it was queued and taken up (timestamps).</summary>
internal sealed record StepArrival(Envelope Envelope, long Queued, long Taken);

/// <summary>What leaves the compute thread, for the <see cref="HopForwarder"/>.</summary>
internal abstract record Outgoing;

/// <summary>A step this node finished (its output or its error).</summary>
internal sealed record FinishedStep(StepCompletion Completion, StepArrival Arrival) : Outgoing;

/// <summary>A message for the coordinator (e.g. <see cref="RangeReady"/>).</summary>
internal sealed record CoordinatorNotice(IMessage Body) : Outgoing;

/// <summary>What the coordinator link reports about the stage (read from any thread).</summary>
internal interface IStageView
{
    /// <summary>The layer range loaded, or null.</summary>
    LayerRange? Range { get; }

    /// <summary>The stage's counters, or null while nothing is loaded.</summary>
    StageHostStats? Stats { get; }
}

/// <summary>
/// The stage worker: owns the compute thread and the <see cref="StageHost"/> on it. Work arrives through a bounded
/// queue (steps, layer assignments, session closes, expiry ticks); the thread takes everything queued, then runs one
/// batched iteration and hands each finished step to the hop forwarder (it never touches the network), and blocks
/// only when there is nothing to run. Loading a new range fails the old range's steps and tells the coordinator
/// when the new one is ready.
/// </summary>
internal sealed class StageWorker : IStageView
{
    private abstract record Work;
    private sealed record LoadWork(LayerRange Range, long AssignmentId, Checkpoint? Checkpoint) : Work;
    private sealed record StepWork(ForwardRequest Request, Envelope Envelope, long Queued) : Work;
    private sealed record CloseWork(long SessionId) : Work;
    private sealed record ExpireWork : Work;

    private const int QueueCapacity = 4096;
    private static readonly TimeSpan ExpiryPeriod = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan IdleRetry = TimeSpan.FromMilliseconds(10);

    private readonly BlockingCollection<Work> _work = new(new ConcurrentQueue<Work>(), QueueCapacity);
    private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Checkpoint? _checkpoint;
    private readonly NodeOptions _options;
    private readonly WeightFormat _weights;
    private readonly BoundedHandoff<Outgoing> _outbox;
    private readonly NodeStatus _status;
    private readonly ILogger _logger;
    private readonly CancellationToken _abandon;
    private volatile StageHost? _host;
    private DraftModelRunner? _drafter;   // --draft-model, loaded with the first last-stage range (compute thread only)

    /// <param name="checkpoint">The node's whole local checkpoint; null when each range comes with its own (fetched) folder.</param>
    /// <param name="abandon">Fires when the node stops waiting for the forwarder: outputs that cannot be queued are dropped.</param>
    public StageWorker(Checkpoint? checkpoint, NodeOptions options, WeightFormat weights, BoundedHandoff<Outgoing> outbox, NodeStatus status,
        ILogger logger, CancellationToken abandon)
    {
        _checkpoint = checkpoint; _options = options; _weights = weights; _outbox = outbox; _status = status; _logger = logger; _abandon = abandon;
    }

    /// <inheritdoc />
    public LayerRange? Range => _host?.Range;

    /// <inheritdoc />
    public StageHostStats? Stats => _host?.Stats;

    /// <summary>Completes when the compute thread has ended (after <see cref="Complete"/>) and the outbox is completed.</summary>
    public Task Completion => _done.Task;

    /// <summary>Starts the compute thread.</summary>
    public void Start() => new Thread(ComputeLoop) { IsBackground = true, Name = "swarm-stage-compute" }.Start();

    /// <summary>Queues a step; false when the queue is full or closed (the caller refuses the step).</summary>
    public bool TrySubmit(ForwardRequest request, Envelope envelope) => Offer(new StepWork(request, envelope, Stopwatch.GetTimestamp()));

    /// <summary>Queues loading <paramref name="range"/> (a no-op apart from the ready notice when it is already loaded).</summary>
    /// <param name="checkpoint">A folder holding the range's tensors, read and then disposed by the worker; null: the node's checkpoint.</param>
    public void Load(LayerRange range, long assignmentId, Checkpoint? checkpoint = null) => Offer(new LoadWork(range, assignmentId, checkpoint));

    /// <summary>Queues freeing a session.</summary>
    public void Close(long sessionId) => Offer(new CloseWork(sessionId));

    /// <summary>Every 5 s, queues freeing sessions idle longer than the session TTL, until <paramref name="ct"/> fires.</summary>
    public async Task ExpireIdleSessionsAsync(CancellationToken ct)
    {
        using var timer = new PeriodicTimer(ExpiryPeriod);
        while (await timer.WaitForNextTickAsync(ct).ConfigureAwait(false))
            Offer(new ExpireWork());
    }

    /// <summary>Takes no more work; the compute thread finishes what it can, fails the rest and ends.</summary>
    public void Complete() => _work.CompleteAdding();

    private bool Offer(Work work)
    {
        try { return _work.TryAdd(work); }
        catch (InvalidOperationException) { return false; } // completed: the node is stopping
    }

    private void ComputeLoop()
    {
        using var inference = inference_mode();
        try
        {
            while (true)
            {
                while (_work.TryTake(out var w)) Execute(w);
                if (_host is { HasWork: true } host)
                {
                    if (RunIteration(host)) continue;
                    // Nothing could run (sessions wait for KV blocks held by sessions on other stages): wait for new
                    // work, or until the scheduler would preempt.
                    if (_work.IsCompleted) break;
                    var wait = host.RetryAfter is { } due ? TimeSpan.FromTicks(Math.Clamp(due.Ticks, TimeSpan.TicksPerMillisecond, TimeSpan.TicksPerSecond)) : IdleRetry;
                    if (_work.TryTake(out var arrived, wait)) Execute(arrived);
                    continue;
                }
                if (!_work.TryTake(out var next, Timeout.Infinite)) break; // completed and empty
                Execute(next);
            }
        }
        finally
        {
            try
            {
                var host = _host;
                _host = null;
                if (host is not null)
                {
                    foreach (var c in host.Abort(ErrorCode.ShuttingDown, "the node is stopping")) Hand(c);
                    host.Dispose();
                }
                _drafter?.Dispose();
            }
            finally
            {
                _outbox.Complete();
                _done.TrySetResult();
            }
        }
    }

    /// <summary>Runs one iteration; true when it made progress (ran a batch or finished steps).</summary>
    private bool RunIteration(StageHost host)
    {
        long before = host.Stats.Iterations;
        int finished = 0;
        try
        {
            foreach (var c in host.RunIteration()) { Hand(c); finished++; }
        }
        catch (Exception e)
        {
            _logger.ComputeError(e.GetType().Name, e.Message);
        }
        var stats = host.Stats;
        if (stats.Iterations != before) NodeInstrumentation.RecordBatch(stats.LastBatch);
        return finished > 0 || stats.Iterations != before;
    }

    private void Execute(Work w)
    {
        try
        {
            switch (w)
            {
                case LoadWork load: LoadRange(load); break;
                case StepWork step: Submit(step); break;
                case CloseWork close: _host?.Close(close.SessionId); break;
                case ExpireWork:
                    int n = _host?.ExpireIdle(TimeSpan.FromSeconds(_options.SessionTtlSeconds)) ?? 0;
                    if (n > 0) _logger.Expired(n);
                    break;
            }
        }
        catch (Exception e)
        {
            _logger.ComputeError(e.GetType().Name, e.Message);
        }
    }

    private void LoadRange(LoadWork w)
    {
        using var fetched = w.Checkpoint;
        if (_host is { } loaded && loaded.Range.Equals(w.Range))
        {
            Notify(Ready(loaded, w.AssignmentId));
            return;
        }
        var checkpoint = w.Checkpoint ?? _checkpoint ?? throw new InvalidOperationException($"no checkpoint to load layers {w.Range} from");
        _status.State = NodeReadiness.Loading;
        var sw = Stopwatch.StartNew();
        var old = _host;
        _host = null;
        if (old is not null)
        {
            // Sessions on the old range are gone; the coordinator re-routes their jobs.
            foreach (var c in old.Abort(ErrorCode.RangeNotLoaded, $"this node now loads layers {w.Range}")) Hand(c);
            old.Dispose();
        }
        var model = StageModel.Load(checkpoint, w.Range.Start, w.Range.End, _weights,
            Console.IsErrorRedirected ? null : new ConsoleProgress($"loading layers {w.Range}"),
            tensorParallel: _options.Tp == 1 && _options.Devices is null ? null : _options.TensorParallel());
        long kvBudget = Math.Max(0, _options.MemoryBytes - model.WeightBytes);
        if (model.IsLast && !string.IsNullOrWhiteSpace(_options.DraftModel))
        {
            // The draft caches as many tokens as the stage (one draft session per session), out of the same budget.
            long tokens = kvBudget / Math.Max(1, model.KvBytesPerToken);
            if (_drafter is null)
            {
                _drafter = DraftModelRunner.Load(_options.DraftModel, _weights, tokens);
                _logger.DraftModelLoaded(_options.DraftModel, _drafter.Identity, _drafter.Model.Config.NumLayers, _drafter.Model.WeightBytes / 1e6);
            }
            kvBudget = Math.Max(0, kvBudget - _drafter.Model.WeightBytes - tokens * _drafter.Model.KvBytesPerToken);
        }
        var host = new StageHost(model, kvBudget, fault: _options.Fault, drafter: model.IsLast ? _drafter : null);
        _host = host;
        _status.State = NodeReadiness.Ready;
        _logger.Loaded(w.Range.ToString(), model.WeightBytes / 1e6, sw.Elapsed.TotalMilliseconds, host.KvTokenCapacity,
            model.TensorParallel?.ToString() ?? "tp=1");
        Notify(Ready(host, w.AssignmentId));
    }

    private static RangeReady Ready(StageHost host, long assignmentId) => new()
    {
        Range = host.Range,
        AssignmentId = assignmentId,
        KvBytesPerTokenPerLayer = KvBlockPool.BytesPerTokenPerLayer(host.Model.Config, host.Model.ComputeDtype),
        MaxKvTokens = host.KvTokenCapacity,
    };

    private void Submit(StepWork w)
    {
        var arrival = new StepArrival(w.Envelope, w.Queued, Stopwatch.GetTimestamp());
        if (_host is { } host) host.Submit(w.Request, arrival);
        else Hand(new StepCompletion(w.Request, arrival, null, new StepException(ErrorCode.RangeNotLoaded, "no layers loaded yet")));
    }

    /// <summary>Queues a finished step for the forwarder (blocking only while its queue is full).</summary>
    private void Hand(StepCompletion c)
    {
        if (!Queue(new FinishedStep(c, (StepArrival)c.State!))) _status.StepHandled(); // dropped at shutdown: nobody sends it
    }

    private void Notify(IMessage body) => Queue(new CoordinatorNotice(body));

    private bool Queue(Outgoing item)
    {
        try { return _outbox.Write(item, _abandon); }
        catch (OperationCanceledException) { return false; }
    }
}
