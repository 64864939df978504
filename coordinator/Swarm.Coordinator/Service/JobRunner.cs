using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Swarm.Coordinator.Jobs;
using Swarm.Coordinator.Routing;
using Swarm.Coordinator.Telemetry;
using Swarm.Protocol;
using Swarm.Sampling;
using Swarm.Telemetry;
using Swarm.Transport;

namespace Swarm.Coordinator.Service;

/// <summary>What a job asks for, in token ids.</summary>
public sealed record JobSpec(IReadOnlyList<int> Prompt, SamplingOptions Sampling, IReadOnlyList<string> StopSequences);

/// <summary>How a job ended.</summary>
public sealed record JobResult(string Id, IReadOnlyList<int> TokenIds, string Text, string FinishReason, int PromptTokens,
    double TimeToFirstTokenMs, double TotalMs, int Recoveries, IReadOnlyList<StageMean> Stages);

/// <summary>A stage of the job's (last) route and its mean forward time over decode steps (prefill when there were none).</summary>
public sealed record StageMean(int NodeId, int LayerStart, int LayerEnd, double ForwardMs);

/// <summary>A job could not run or finish; <see cref="HttpStatus"/> is what the API answers.</summary>
public sealed class JobFailedException(string message, int httpStatus, string code) : Exception(message)
{
    public int HttpStatus { get; } = httpStatus;
    public string Code { get; } = code;
}

/// <summary>Summary of a finished or running job, for status views.</summary>
public sealed record JobRecord(string Id, string State, int PromptTokens, int CompletionTokens, double? TtftMs, double? TokensPerSecond,
    int Recoveries, string? Error, DateTimeOffset? FinishedAt);

/// <summary>
/// Runs generation jobs through the swarm: admission (concurrency limit, queue, coverage wait), routing,
/// the step loop (prefill, then one decode step per token: N+1 messages for N stages — the last stage
/// samples), streaming, stop conditions, and recovery: when a hop fails or its node dies, the route is
/// rebuilt and the session's KV caches are recomputed on the new route from the token ids the coordinator
/// holds (prompt + tokens so far), so generation resumes at the same step with the same seeded draw.
/// </summary>
public sealed partial class JobRunner
{
    private readonly SwarmCoordinator _swarm;
    private readonly ILogger _logger;
    private readonly JobAdmissionController _admission;
    private readonly ConcurrentDictionary<string, TaskCompletionSource<AdmissionEvent>> _waiting = new();
    private readonly ConcurrentDictionary<string, JobRecord> _recent = new();
    private readonly ConcurrentDictionary<long, HashSet<int>> _routesByJob = new();
    private readonly Timer _tick;
    private long _nextJob, _nextSession = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() << 16;
    private long _completed, _failed;

    public JobRunner(SwarmCoordinator swarm, ILogger<JobRunner> logger)
    {
        _swarm = swarm;
        _logger = logger;
        var o = swarm.Options;
        _admission = new JobAdmissionController(new JobAdmissionOptions
        {
            MaxConcurrentJobs = o.MaxConcurrentJobs,
            MaxQueueLength = o.MaxQueueLength,
            QueueTimeout = o.QueueTimeout,
        }, TimeProvider.System);
        _tick = new Timer(_ => Tick(), null, 200, 200);
        swarm.NodeLost += OnNodeLost;
        CoordinatorInstrumentation.Observe(this);
    }

    public int Queued => _admission.Queued;
    public int Running => _admission.Running;
    public long Completed => Interlocked.Read(ref _completed);
    public long Failed => Interlocked.Read(ref _failed);
    public IEnumerable<JobRecord> Recent => _recent.Values.OrderByDescending(r => r.FinishedAt ?? DateTimeOffset.MaxValue).Take(20);

    /// <summary>Raised for every finished job (metrics).</summary>
    public event Action<JobResult>? JobFinished;
    public event Action<string>? JobFailed;

    private readonly ConcurrentDictionary<long, Action<IMessage>> _failureHooks = new();

    private void OnNodeLost(int nodeId)
    {
        foreach (var (job, nodes) in _routesByJob)
        {
            bool hit;
            lock (nodes) hit = nodes.Contains(nodeId);
            if (hit && _failureHooks.TryGetValue(job, out var hook))
                hook(new StepFailed { JobId = job, Step = -1, NodeId = nodeId, Code = ErrorCode.NextHopUnreachable, Message = $"node {nodeId} left or died" });
        }
    }

    private void Tick()
    {
        try
        {
            var cov = _swarm.Registry.ServingCoverage(_swarm.Config.NumLayers);
            Resolve(_admission.UpdateCoverage(cov.Uncovered));
            Resolve(_admission.Tick());
        }
        catch (Exception e) { LogTickError(e.Message); }
    }

    private void Resolve(IReadOnlyList<AdmissionEvent> events)
    {
        foreach (var e in events)
            if (_waiting.TryRemove(e.JobId, out var tcs)) tcs.TrySetResult(e);
    }

    /// <summary>Runs a job to completion, calling <paramref name="onToken"/> for each new token (streaming).</summary>
    /// <exception cref="JobFailedException">Queue full (429), layers uncovered past the wait (503), or the job failed (500).</exception>
    /// <param name="id">Name of the job in responses and status (default cmpl-N).</param>
    public async Task<JobResult> RunAsync(JobSpec spec, Func<int, string, ValueTask>? onToken, CancellationToken ct, string? id = null)
    {
        long jobNumber = Interlocked.Increment(ref _nextJob);
        id ??= $"cmpl-{jobNumber}";
        using var activity = CoordinatorInstrumentation.StartJob(id, spec.Prompt.Count, spec.Sampling.MaxNewTokens);
        _recent[id] = new JobRecord(id, "queued", spec.Prompt.Count, 0, null, null, 0, null, null);
        var total = Stopwatch.StartNew();
        try { await AdmitAsync(id, ct); }
        catch (Exception e)
        {
            string outcome = e is OperationCanceledException ? "cancelled" : "rejected";
            CoordinatorInstrumentation.JobEnded(outcome);
            SwarmTelemetry.RecordFailure(activity, outcome, null, e.Message, (e as JobFailedException)?.Code);
            throw;
        }
        activity?.AddEvent(new ActivityEvent(CoordinatorInstrumentation.AdmittedEvent, tags: new ActivityTagsCollection { ["swarm.queue_ms"] = total.Elapsed.TotalMilliseconds }));
        var tokens = new List<int>();
        int recoveries = 0;
        double ttft = 0;
        try
        {
            _recent[id] = _recent[id] with { State = "running" };
            var (finish, stages) = await StepLoopAsync(jobNumber, spec, tokens, onToken, r => recoveries = r, t => ttft = t, total, activity, ct);
            string text = _swarm.Tokenizer?.Decode(tokens) ?? "";
            if (finish == "stop" && spec.StopSequences.Count > 0) text = TrimAtStop(text, spec.StopSequences);
            var result = new JobResult(id, tokens, text, finish, spec.Prompt.Count, ttft, total.Elapsed.TotalMilliseconds, recoveries, stages);
            Interlocked.Increment(ref _completed);
            double? rate = tokens.Count > 1 ? (tokens.Count - 1) / ((total.Elapsed.TotalMilliseconds - ttft) / 1000) : null;
            _recent[id] = new JobRecord(id, "done", spec.Prompt.Count, tokens.Count, ttft, rate, recoveries, null, DateTimeOffset.UtcNow);
            CoordinatorInstrumentation.JobEnded("completed");
            activity?.SetTag("swarm.finish_reason", finish);
            activity?.SetTag("swarm.completion_tokens", tokens.Count);
            activity?.SetTag("swarm.recoveries", recoveries);
            JobFinished?.Invoke(result);
            return result;
        }
        catch (Exception e)
        {
            Interlocked.Increment(ref _failed);
            string msg = e is OperationCanceledException ? "cancelled (client went away)" : e.Message;
            _recent[id] = new JobRecord(id, "failed", spec.Prompt.Count, tokens.Count, ttft > 0 ? ttft : null, null, recoveries, msg, DateTimeOffset.UtcNow);
            JobFailed?.Invoke(e is OperationCanceledException ? "cancelled" : "failed");
            CoordinatorInstrumentation.JobEnded(e is OperationCanceledException ? "cancelled" : "failed");
            activity?.SetTag("swarm.completion_tokens", tokens.Count);
            activity?.SetTag("swarm.recoveries", recoveries);
            SwarmTelemetry.RecordFailure(activity, "job.failed", null, msg, (e as JobFailedException)?.Code);
            throw;
        }
        finally
        {
            Resolve(_admission.Complete(id));
            while (_recent.Count > 200)
            {
                var oldest = _recent.Values.Where(r => r.FinishedAt is not null).MinBy(r => r.FinishedAt);
                if (oldest is null) break;
                _recent.TryRemove(oldest.Id, out _);
            }
        }
    }

    private async Task AdmitAsync(string id, CancellationToken ct)
    {
        var tcs = new TaskCompletionSource<AdmissionEvent>(TaskCreationOptions.RunContinuationsAsynchronously);
        _waiting[id] = tcs;
        var first = _admission.Submit(id);
        if (first.Outcome != AdmissionOutcome.Queued) { _waiting.TryRemove(id, out _); tcs.TrySetResult(first); }
        AdmissionEvent ev;
        using (ct.Register(() => { Resolve(_admission.Cancel(id)); if (_waiting.TryRemove(id, out var t)) t.TrySetCanceled(ct); }))
            ev = await tcs.Task;
        switch (ev.Outcome)
        {
            case AdmissionOutcome.Started: return;
            case AdmissionOutcome.RejectedQueueFull:
                _recent.TryRemove(id, out _);
                throw new JobFailedException(ev.Error ?? "the job queue is full", 429, "queue_full");
            default:
                _recent.TryRemove(id, out _);
                throw new JobFailedException(ev.Error ?? "timed out waiting for the swarm", 503, ev.Uncovered.Count > 0 ? "layers_uncovered" : "queue_timeout");
        }
    }

    private async Task<(string Finish, IReadOnlyList<StageMean> Stages)> StepLoopAsync(long job, JobSpec spec, List<int> tokens,
        Func<int, string, ValueTask>? onToken, Action<int> setRecoveries, Action<double> setTtft, Stopwatch total, Activity? jobSpan, CancellationToken ct)
    {
        var sampling = spec.Sampling;
        long seed = sampling.Seed ?? Random.Shared.NextInt64();
        var wireSampling = new SamplingParams { Temperature = sampling.Temperature, TopK = sampling.TopK, TopP = sampling.TopP, Seed = unchecked((ulong)seed) };
        var stop = new HashSet<int>(sampling.StopTokenIds);
        int context = _swarm.Config.MaxPositionEmbeddings;
        int maxNew = Math.Min(sampling.MaxNewTokens, context - spec.Prompt.Count);
        var replies = Channel.CreateUnbounded<IMessage>();
        using var sub = _swarm.Subscribe(job, m => replies.Writer.TryWrite(m));
        _failureHooks[job] = m => replies.Writer.TryWrite(m);
        var routeNodes = new HashSet<int>();
        _routesByJob[job] = routeNodes;
        Route? route = null;
        long session = 0;
        int cached = 0, recoveries = 0;
        double recentStepMs = 0;
        var decode = new Dictionary<int, (double Sum, int N)>();   // node → decode forward ms
        var prefill = new Dictionary<int, double>();               // node → last prefill/replay forward ms
        IReadOnlyList<StageMean> Means() => route is null ? [] : route.Hops.Select(h =>
        {
            double ms = decode.TryGetValue(h.NodeId, out var d) && d.N > 0 ? d.Sum / d.N : prefill.GetValueOrDefault(h.NodeId);
            return new StageMean(h.NodeId, h.Layers.Start, h.Layers.End, ms);
        }).ToList();
        var decoder = _swarm.Tokenizer is null ? null : new Tokenization.IncrementalDecoder(_swarm.Tokenizer);
        string textSoFar = "";
        double lastTokenAt = 0;
        try
        {
            for (int step = 0; step < maxNew; step++)
            {
                while (true)
                {
                    ct.ThrowIfCancellationRequested();
                    if (route is null)
                    {
                        using (var routing = CoordinatorInstrumentation.Source.StartActivity(CoordinatorInstrumentation.RouteSpan))
                        {
                            try { route = await RouteAsync(ct); }
                            catch (JobFailedException e) { SwarmTelemetry.RecordFailure(routing, "route.failed", null, e.Message, e.Code); throw; }
                            routing?.SetTag("swarm.route", route.ToString());
                            routing?.SetTag("swarm.route.hops", route.Hops.Count);
                        }
                        session = Interlocked.Increment(ref _nextSession);
                        cached = 0;
                        lock (routeNodes) { routeNodes.Clear(); foreach (var n in route.NodeIds) routeNodes.Add(n); }
                        foreach (var n in route.NodeIds) _swarm.Registry.AdjustInFlight(n, +1);
                    }
                    // Input: everything the session's caches lack (all tokens after a (re)route, else the last token).
                    // Decode sends the one new token; a fresh route gets everything so far (prompt + tokens).
                    int known = spec.Prompt.Count + tokens.Count;
                    int[] input = cached > 0 && cached == known - 1 ? [tokens[^1]] : spec.Prompt.Concat(tokens).Skip(cached).ToArray();
                    var kind = cached == 0 ? (step == 0 ? StepKind.Prefill : StepKind.Replay) : StepKind.Decode;
                    var req = new ForwardRequest
                    {
                        JobId = job, SessionId = session, Step = step, Kind = kind, StartPosition = cached,
                        Input = WireTensor.FromTokenIds(input.Select(t => (long)t).ToArray()),
                        Route = route.Hops.Select(h => new Hop { NodeId = h.NodeId, Endpoint = _swarm.EndpointOf(h.NodeId), Layers = h.Layers, Key = _swarm.KeyOf(h.NodeId) }).ToArray(),
                        WireDType = _swarm.Wire, Sampling = wireSampling,
                    };
                    using var stepSpan = CoordinatorInstrumentation.Source.StartActivity(CoordinatorInstrumentation.StepSpan, ActivityKind.Client);
                    stepSpan?.SetTag(SwarmTelemetry.StepTag, step);
                    stepSpan?.SetTag(SwarmTelemetry.StepKindTag, kind.ToString().ToLowerInvariant());
                    stepSpan?.SetTag(SwarmTelemetry.SessionTag, session);
                    stepSpan?.SetTag("swarm.input_tokens", input.Length);
                    int? failedNode = null;
                    string? why = null, code = null;
                    bool overloaded = false;
                    try
                    {
                        var stepWatch = Stopwatch.StartNew();
                        _swarm.SendToNode(route.Hops[0].NodeId, Envelope.Create(req, session));
                        // A decode step normally takes about as long as the last ones; when it takes far longer and a
                        // node of the route has gone silent (suspect), repair now instead of waiting for it to be declared dead.
                        var patience = kind == StepKind.Decode && recentStepMs > 0
                            ? TimeSpan.FromMilliseconds(Math.Max(MinPatienceMs, 4 * recentStepMs)) : (TimeSpan?)null;
                        var reply = await WaitReplyAsync(replies.Reader, step, session, patience, route, ct);
                        if (stepWatch.Elapsed > TimeSpan.FromSeconds(2))
                            LogSlowStep(job, step, route.ToString(), stepWatch.Elapsed.TotalMilliseconds, reply.GetType().Name);
                        if (reply is TokenResult tr)
                        {
                            if (kind == StepKind.Decode)
                                recentStepMs = recentStepMs == 0 ? stepWatch.Elapsed.TotalMilliseconds : 0.8 * recentStepMs + 0.2 * stepWatch.Elapsed.TotalMilliseconds;
                            cached = known;
                            foreach (var t in tr.Timings)
                            {
                                if (kind != StepKind.Decode) prefill[t.NodeId] = t.Milliseconds;
                                else { var (sum, n) = decode.GetValueOrDefault(t.NodeId); decode[t.NodeId] = (sum + t.Milliseconds, n + 1); }
                            }
                            int token = tr.TokenId;
                            tokens.Add(token);
                            if (step == 0) setTtft(total.Elapsed.TotalMilliseconds);
                            double now = total.Elapsed.TotalSeconds;
                            CoordinatorInstrumentation.TokensGenerated.Add(1);
                            if (step == 0) CoordinatorInstrumentation.TimeToFirstToken.Record(now);
                            else CoordinatorInstrumentation.TimePerOutputToken.Record(now - lastTokenAt);
                            lastTokenAt = now;
                            string piece = decoder?.Push(token) ?? "";
                            textSoFar += piece;
                            if (onToken is not null) await onToken(token, piece);
                            if (stop.Contains(token)) return ("stop", Means());
                            if (spec.StopSequences.Count > 0 && spec.StopSequences.Any(s => textSoFar.Contains(s, StringComparison.Ordinal))) return ("stop", Means());
                            break;
                        }
                        var sf = (StepFailed)reply;
                        SwarmTelemetry.RecordFailure(stepSpan, CoordinatorInstrumentation.StepFailedEvent, sf.NodeId, sf.Message, sf.Code.ToString());
                        if (sf.Code is ErrorCode.BadRequest)
                            throw new JobFailedException($"node {sf.NodeId} rejected the step: {sf.Message}", 500, "step_rejected");
                        failedNode = sf.NodeId;
                        why = sf.Message;
                        code = sf.Code.ToString();
                        // A full KV pool (the node preempted the session) is pressure, not a fault: back off, replay.
                        overloaded = sf.Code == ErrorCode.Overloaded;
                        if (overloaded) await Task.Delay(50 * recoveries + 50, ct);
                    }
                    catch (PeerDisconnectedException e)
                    {
                        failedNode = route.Hops[0].NodeId; why = e.Message; code = "disconnected";
                        SwarmTelemetry.RecordFailure(stepSpan, CoordinatorInstrumentation.StepFailedEvent, failedNode, why, code);
                    }
                    catch (TimeoutException e)
                    {
                        why = e.Message; code = "timeout";
                        SwarmTelemetry.RecordFailure(stepSpan, CoordinatorInstrumentation.StepFailedEvent, null, why, code);
                    }
                    // Recovery: forget this route, report the culprit, re-route and recompute the caches.
                    recoveries++;
                    setRecoveries(recoveries);
                    _swarm.CountRecovery();
                    CoordinatorInstrumentation.Recovered(code ?? "unknown");
                    jobSpan?.AddEvent(SwarmTelemetry.FailureEvent(CoordinatorInstrumentation.RecoveryEvent, failedNode, why ?? "", code, step));
                    LogRecovery(job, step, failedNode?.ToString(CultureInfo.InvariantCulture) ?? "?", why ?? "");
                    if (failedNode is { } culprit && !overloaded && _swarm.Registry.Get(culprit) is not null) _swarm.Registry.ReportFailure(culprit);
                    ReleaseRoute(route, session);
                    route = null;
                    if (recoveries > _swarm.Options.MaxRecoveriesPerJob)
                        throw new JobFailedException($"gave up after {recoveries - 1} route repairs at step {step}: {why}", 503, "recovery_failed");
                }
            }
            return ("length", Means());
        }
        finally
        {
            _failureHooks.TryRemove(job, out _);
            _routesByJob.TryRemove(job, out _);
            if (route is not null) ReleaseRoute(route, session);
        }
    }

    private void ReleaseRoute(Route route, long session)
    {
        foreach (var n in route.NodeIds)
        {
            _swarm.Registry.AdjustInFlight(n, -1);
            try { _swarm.SendToNode(n, Envelope.Create(new CloseSession { SessionId = session }, session)); }
            catch (PeerDisconnectedException) { }
        }
    }

    private async Task<Route> RouteAsync(CancellationToken ct)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            var result = _swarm.Router.Route(_swarm.Config.NumLayers, RouteCandidate.FromAll(_swarm.Registry.Snapshot()));
            if (result.Route is { } r) return r;
            if (deadline.Elapsed > _swarm.Options.QueueTimeout)
                throw new JobFailedException($"no route covers the model: {LayerRange.DescribeAll(result.Uncovered)} not served by any node", 503, "layers_uncovered");
            await Task.Delay(100, ct);
        }
    }

    /// <summary>Floor of the adaptive patience for a decode step before a silent route node is treated as failed.</summary>
    private const double MinPatienceMs = 400;

    private async Task<IMessage> WaitReplyAsync(ChannelReader<IMessage> replies, int step, long session, TimeSpan? patience, Route route, CancellationToken ct)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(_swarm.Options.StepTimeout);
        var waited = Stopwatch.StartNew();
        try
        {
            while (true)
            {
                IMessage m;
                if (patience is { } p)
                {
                    using var tick = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token);
                    tick.CancelAfter(TimeSpan.FromMilliseconds(100));
                    try { m = await replies.ReadAsync(tick.Token); }
                    catch (OperationCanceledException) when (!timeout.IsCancellationRequested)
                    {
                        if (waited.Elapsed > p && SilentNode(route) is { } silent)
                            return new StepFailed { JobId = 0, Step = step, SessionId = session, NodeId = silent, Code = ErrorCode.Timeout,
                                Message = $"no reply after {waited.Elapsed.TotalMilliseconds:F0} ms and node {silent} has stopped sending heartbeats" };
                        continue;
                    }
                }
                else m = await replies.ReadAsync(timeout.Token);
                switch (m)
                {
                    case TokenResult tr when tr.Step == step && tr.SessionId == session: return tr;
                    case StepFailed sf when sf.Step == -1 || (sf.Step == step && sf.SessionId == session): return sf;
                    default: continue; // a stale reply from an abandoned route
                }
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new TimeoutException($"no reply to step {step} within {_swarm.Options.StepTimeout.TotalSeconds:F1} s");
        }
    }

    /// <summary>A node of the route that the failure detector suspects (silent past the suspect threshold), or null.</summary>
    private int? SilentNode(Route route)
    {
        foreach (int id in route.NodeIds)
            if (_swarm.Registry.Get(id) is not { } n || n.Health != Membership.NodeHealth.Alive) return id;
        return null;
    }

    private static string TrimAtStop(string text, IReadOnlyList<string> stops)
    {
        int cut = stops.Select(s => text.IndexOf(s, StringComparison.Ordinal)).Where(i => i >= 0).DefaultIfEmpty(-1).Min();
        return cut >= 0 ? text[..cut] : text;
    }

    [LoggerMessage(200, LogLevel.Warning, "job {Job} step {Step}: route failed at node {Node} ({Reason}); re-routing and replaying")]
    private partial void LogRecovery(long job, int step, string node, string reason);
    [LoggerMessage(202, LogLevel.Warning, "job {Job} step {Step} took {Ms:F0} ms on route {Route} (reply {Reply})")]
    private partial void LogSlowStep(long job, int step, string route, double ms, string reply);
    [LoggerMessage(201, LogLevel.Error, "admission tick failed: {Message}")]
    private partial void LogTickError(string message);
}
