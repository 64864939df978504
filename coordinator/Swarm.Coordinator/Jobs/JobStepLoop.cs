using System.Diagnostics;
using Microsoft.Extensions.Logging;
using System.Collections.Concurrent;
using Swarm.Coordinator.Speculation;
using Swarm.Coordinator.Telemetry;
using Swarm.Coordinator.Verification;
using Swarm.Protocol;
using Swarm.Telemetry;
using Swarm.Tokenization;
using Swarm.Transport;

namespace Swarm.Coordinator.Jobs;

/// <summary>What every job's step loop shares.</summary>
/// <param name="Sessions">Opens route sessions (routing, session ids, in-flight accounting).</param>
/// <param name="Time">Clock of step timeouts, patience, back-off and latency figures.</param>
/// <param name="Options">Limits and timing.</param>
/// <param name="Tokenizer">Decodes tokens to the completion's text (streaming, stop sequences); null when the model has none.</param>
/// <param name="Logger">Where recoveries and slow steps are logged.</param>
/// <param name="OnRecovery">Called once per route repair (the coordinator's recovery count).</param>
/// <param name="Checker">Spot checks of sessions' steps; null: none.</param>
/// <param name="Bans">Bans the loops listen to (to recompute what a banned node touched); null: none.</param>
internal sealed record StepLoopServices(RouteSessionFactory Sessions, TimeProvider Time, JobRunnerOptions Options,
    ITextTokenizer? Tokenizer, ILogger Logger, Action? OnRecovery, SpotChecker? Checker = null, BanBoard? Bans = null);

/// <summary>How a job's generation ended: <c>length</c> or <c>stop</c>, and the stages of its last route.</summary>
internal sealed record StepLoopResult(string FinishReason, IReadOnlyList<StageMean> Stages);

/// <summary>
/// Generates one job's tokens: the prefill, then one decode step per token (N+1 messages for N stages: the last stage
/// samples), each through the job's <see cref="RouteSession"/>, until the token limit, the context length or a stop
/// condition. When a step fails — a hop answers <see cref="StepFailed"/>, the first hop is disconnected, a node of the
/// route is lost or stays silent past the step's patience, or nothing answers within the step timeout — the loop reports
/// the culprit to the registry, releases the session, opens one on a new route and replays the step there from
/// position 0 (prompt + tokens so far), so every stage recomputes its KV cache from the token ids and generation resumes
/// at the same step with the same seeded draw. A node that refuses a step as overloaded (its KV pool is full) is under
/// pressure, not faulty: it is not reported, and the replay waits a back-off first.
/// A spot-checked step is accepted only once the checker has compared it with a second replica's; when a node is banned
/// (here or in another job), the tokens this job accepted through it since its last passed check are dropped and
/// generated again on other nodes — or, when they were already streamed, the job ends with a <c>node_banned</c> error.
/// With <see cref="VerificationOptions.StreamVerifiedOnly"/> a stream holds back tokens through nodes on probation until
/// their checks pass (<see cref="VerifiedStream"/>), so a ban rewinds them before they were sent.
/// With speculation (<see cref="JobRunnerOptions.Speculation"/>, for jobs without logprobs or hidden states) a step also
/// carries drafted tokens after its input (<see cref="ForwardRequest.Draft"/>); the last stage answers with the drafts it
/// accepted plus its own next token, which are all recorded (and streamed) one by one. The stages cache the rejected
/// drafts' positions too: the next step starts at the first of them (its <see cref="ForwardRequest.StartPosition"/> is the
/// count of positions this loop knows valid), which truncates them away on every stage. A failed step is replayed with the
/// same draft (a pure function of the tokens so far), so a replay decides the same.
/// </summary>
internal sealed partial class JobStepLoop
{
    private readonly RouteSessionFactory _sessions;
    private readonly TimeProvider _time;
    private readonly JobRunnerOptions _options;
    private readonly ILogger _logger;
    private readonly Action? _onRecovery;
    private readonly long _job;
    private readonly string _id;
    private readonly JobSpec _spec;
    private readonly SamplingParams _sampling;
    private readonly ITextTokenizer? _tokenizer;
    private readonly SpotChecker? _checker;
    private readonly JobSpeculation? _speculation;
    private readonly BanBoard? _bans;
    private readonly ConcurrentQueue<NodeBan> _banned = new();
    private StopDetector _stop;
    private IncrementalDecoder? _decoder;
    private readonly PromptReadout _prompt;
    private readonly ShownTokens? _shown;
    private VerifiedStream? _stream;  // --stream-verified-only: the stream's held tokens
    private TokenLogprobs? _lastLogprobs;
    private readonly StageTimings _timings = new();
    private readonly List<int> _tokens = [];
    private readonly List<(DateTimeOffset At, int[] Nodes)> _through = []; // per accepted token: when, and the route's nodes
    private RouteSession? _session;
    private int _cached;            // positions the current session's caches hold
    private double _recentStepMs;   // smoothed duration of a decode step
    private (DateTimeOffset At, int[] Nodes) _stepAt = (default, []); // the last answered step's arrival and route

    private readonly record struct StepFailure(int? Node, string Reason, string Code, bool Overloaded);

    /// <param name="services">What all step loops share.</param>
    /// <param name="job">The job's number (<see cref="ForwardRequest.JobId"/>).</param>
    /// <param name="id">The job's id (<see cref="JobDelta.JobId"/>).</param>
    /// <param name="spec">Prompt, sampling and stop sequences.</param>
    /// <param name="startedAt">Timestamp (of <see cref="StepLoopServices.Time"/>) the job was submitted at: latencies count from it.</param>
    public JobStepLoop(StepLoopServices services, long job, string id, JobSpec spec, long startedAt)
    {
        _sessions = services.Sessions;
        _time = services.Time;
        _options = services.Options;
        _logger = services.Logger;
        _onRecovery = services.OnRecovery;
        _job = job;
        _id = id;
        _spec = spec;
        Progress = new JobProgress(_time, startedAt);
        var s = spec.Sampling;
        long seed = s.Seed ?? Random.Shared.NextInt64();
        _sampling = new SamplingParams { Temperature = s.Temperature, TopK = s.TopK, TopP = s.TopP, Seed = unchecked((ulong)seed) };
        _stop = new StopDetector(s.StopTokenIds, spec.StopSequences);
        _tokenizer = services.Tokenizer;
        _decoder = _tokenizer is null ? null : new IncrementalDecoder(_tokenizer);
        _checker = services.Checker is { Enabled: true } c ? c : null;
        _bans = services.Bans;
        _prompt = new PromptReadout(spec, services.Tokenizer);
        _shown = spec.Logprobs is null ? null : new ShownTokens();
        _speculation = _options.Speculation.Enabled && spec.Logprobs is null && spec.HiddenStates is null ? new JobSpeculation(_options.Speculation) : null;
    }

    /// <summary>The job's speculation figures; null when it did not speculate.</summary>
    public SpeculationCounts? Speculation => _speculation?.Counts;

    /// <summary>Tokens generated so far (read them on the loop's thread; other threads read <see cref="Progress"/>).</summary>
    public IReadOnlyList<int> Tokens => _tokens;

    /// <summary>The completion's text so far: what was released to <c>onDelta</c> (see <see cref="JobResult.Text"/>).</summary>
    public string Text => _stop.Text;

    /// <summary>Live figures: tokens so far, time to first token, decode rate, route repairs.</summary>
    public JobProgress Progress { get; }

    /// <summary>With <see cref="JobSpec.Echo"/>: the prompt's tokens as shown (see <see cref="PromptReadout.Echo"/>); else null.</summary>
    public IReadOnlyList<ShownToken>? Echo => _prompt.Echo;

    /// <summary>With <see cref="JobSpec.Logprobs"/>: the completion's tokens shown so far (see <see cref="ShownTokens"/>); else null.</summary>
    public IReadOnlyList<ShownToken>? Shown => _shown?.All;

    /// <summary>The hidden states the prefill returned (<see cref="JobSpec.HiddenStates"/>).</summary>
    public IReadOnlyList<LayerHiddenStates> HiddenStates => _prompt.HiddenStates;

    /// <summary>
    /// Runs the job to its end, calling <paramref name="onDelta"/> once per generated token (its id and the text it
    /// releases) and, when the token limit ends a job with text still held back, once more with that text; with
    /// <see cref="JobSpec.Echo"/> first once with the prompt (after the prefill when its logprobs are wanted).
    /// </summary>
    /// <exception cref="JobFailedException">No route (503), too many route repairs (503), or a stage rejected a step (500).</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the route is released.</exception>
    public async Task<StepLoopResult> RunAsync(Func<JobDelta, ValueTask>? onDelta, Activity? jobSpan, CancellationToken ct)
    {
        int maxNew = Math.Min(_spec.Sampling.MaxNewTokens, _options.ContextLength - _spec.Prompt.Count);
        // max_tokens 0 still runs the prefill when the prompt's logprobs or hidden states are wanted; its token is dropped.
        int steps = Math.Max(maxNew, _prompt.NeedsPrefill ? 1 : 0);
        using var inbox = _sessions.OpenInbox(_job);
        void OnBan(NodeBan ban) => _banned.Enqueue(ban);
        if (_bans is not null) _bans.Banned += OnBan;
        if (onDelta is not null && _checker is not null && _options.Verification.StreamVerifiedOnly)
            _stream = new VerifiedStream(onDelta, _sessions.Registry, _checker);
        try
        {
            if (_prompt.Echo is not null) await EchoAsync(onDelta).ConfigureAwait(false);
            while (_tokens.Count < steps)
            {
                int step = _tokens.Count;
                int[]? accepted = null;
                while (true)
                {
                    ct.ThrowIfCancellationRequested();
                    if (Rewind(onDelta is not null)) break;
                    _session ??= await _sessions.OpenAsync(inbox, ct, _checker, alwaysOnProbation: _stream is not null).ConfigureAwait(false);
                    var (t, failure) = await StepAsync(_session, step, steps - step - 1, ct).ConfigureAwait(false);
                    if (t is { } got)
                    {
                        if (!Rewind(onDelta is not null)) accepted = got;
                        break;
                    }
                    await RecoverAsync(step, failure, jobSpan, ct).ConfigureAwait(false);
                }
                if (accepted is null) continue; // tokens were dropped after a ban: generate again from there
                if (step == 0 && _spec.Echo && _spec.Logprobs is not null) await EchoAsync(onDelta).ConfigureAwait(false);
                foreach (int token in accepted)
                {
                    if (_tokens.Count >= maxNew) break;
                    if (await AcceptAsync(token, onDelta).ConfigureAwait(false))
                    {
                        if (_stream is not null) await _stream.ReleaseAsync(all: true).ConfigureAwait(false);
                        return new StepLoopResult("stop", _timings.MeansOver(_session?.Route));
                    }
                }
                if (_tokens.Count >= maxNew) break;
            }
            if (_stream is not null) await _stream.ReleaseAsync(all: true).ConfigureAwait(false);
            string tail = _decoder?.Flush() ?? "";
            _shown?.AppendTail(tail);
            string rest = _stop.Finish(tail);
            var shown = _shown?.Release(rest, ended: true, newestOpen: false);
            string last = shown is null ? rest : string.Concat(shown.Select(s => s.Text));   // with logprobs: whole tokens' text
            if ((last.Length > 0 || shown is { Count: > 0 }) && onDelta is not null)
                await onDelta(new JobDelta(_id, [], last) { Logprobs = shown }).ConfigureAwait(false);
            return new StepLoopResult("length", _timings.MeansOver(_session?.Route));
        }
        finally
        {
            if (_bans is not null) _bans.Banned -= OnBan;
            _session?.Release();
        }
    }

    /// <summary>
    /// After a ban: drops the tokens accepted through the banned node since its last passed check (and the route, when the
    /// node is on it) so they are generated again; true when tokens were dropped. A job whose dropped tokens were already
    /// streamed (or scored) cannot take them back: it fails with <c>node_banned</c>. Tokens a <see cref="VerifiedStream"/>
    /// still holds were not streamed: they are dropped from it.
    /// </summary>
    private bool Rewind(bool streamed)
    {
        int from = _tokens.Count;
        int sent = _stream?.Sent ?? (streamed ? _tokens.Count : 0);
        while (_banned.TryDequeue(out var ban))
        {
            // A token answered at the very instant of the node's last passed check counts as checked (it may be that check's).
            int first = _through.FindIndex(s => s.At > ban.Since && s.Nodes.Contains(ban.NodeId));
            if (first >= 0 && (first < sent || _shown is not null))
                throw new JobFailedException($"node {ban.NodeId} was banned ({ban.Reason}); tokens from #{first} on went through it and were already streamed or scored",
                    502, "node_banned");
            if (first >= 0) from = Math.Min(from, first);
            if (_session is { } s && s.Route.NodeIds.Contains(ban.NodeId)) { s.Release(); _session = null; _cached = 0; }
        }
        if (from == _tokens.Count) return false;
        LogRewind(_job, from, _tokens.Count);
        Progress.Rewound(_tokens.Count - from);
        _stream?.DropFrom(from);
        _tokens.RemoveRange(from, _tokens.Count - from);
        _through.RemoveRange(from, _through.Count - from);
        _session?.Release();
        _session = null;
        _cached = 0;
        var s0 = _spec.Sampling;
        _stop = new StopDetector(s0.StopTokenIds, _spec.StopSequences);
        _decoder = _tokenizer is null ? null : new IncrementalDecoder(_tokenizer);
        foreach (int t in _tokens) _stop.Push(_decoder?.Push(t) ?? "");
        return true;
    }

    /// <summary>
    /// One attempt at <paramref name="step"/>: the tokens it produced (one, or with a draft the accepted drafts and the
    /// target's next), or why the route failed. <paramref name="room"/>: tokens the job may still use after the step's first.
    /// </summary>
    private async Task<(int[]? Tokens, StepFailure Failure)> StepAsync(RouteSession session, int step, int room, CancellationToken ct)
    {
        // The input is everything the session's caches lack: the last token when they hold all before it, else (a new
        // route) the prompt and every token so far; then the draft, if any.
        int known = _spec.Prompt.Count + _tokens.Count;
        bool modelDrafts = _speculation is not null && DraftModelRoute.Drafts(_options.Speculation, _sessions.Registry, session, _sampling);
        int[] draft = _speculation?.Draft([.. _spec.Prompt, .. _tokens], room, modelDrafts) ?? [];
        int[] context = _cached > 0 && _cached == known - 1 ? [_tokens[^1]] : [.. _spec.Prompt.Concat(_tokens).Skip(_cached)];
        int[] input = [.. context, .. draft];
        int draftCount = _speculation?.DraftCount(room, modelDrafts) ?? 0;
        var kind = _cached == 0 ? (step == 0 ? StepKind.Prefill : StepKind.Replay) : StepKind.Decode;
        var request = new ForwardRequest
        {
            JobId = _job, SessionId = session.Id, Step = step, Kind = kind, StartPosition = _cached,
            Input = WireTensor.FromTokenIds(input.Select(t => (long)t).ToArray()),
            Route = session.WireRoute, WireDType = _options.Wire, Sampling = _sampling,
            Logprobs = _prompt.LogprobsFor(kind), HiddenStates = _prompt.HiddenStatesFor(kind), Draft = draft,
            DraftCount = draftCount, DraftContext = draftCount > 0 ? context : [],
        };
        using var span = CoordinatorInstrumentation.Source.StartActivity(CoordinatorInstrumentation.StepSpan, ActivityKind.Client);
        span?.SetTag(SwarmTelemetry.StepTag, step);
        span?.SetTag(SwarmTelemetry.StepKindTag, kind.ToString().ToLowerInvariant());
        span?.SetTag(SwarmTelemetry.SessionTag, session.Id);
        span?.SetTag("swarm.input_tokens", input.Length);
        if (_speculation is not null) span?.SetTag("swarm.draft_tokens", draft.Length);
        // A decode step normally takes about as long as the last ones; when it takes far longer and a node of the route
        // has gone silent (suspect), repair now instead of waiting for the node to be declared dead.
        TimeSpan? patience = kind == StepKind.Decode && _recentStepMs > 0
            ? TimeSpan.FromMilliseconds(Math.Max(_options.MinPatience.TotalMilliseconds, 4 * _recentStepMs)) : null;
        long sentAt = _time.GetTimestamp();
        IMessage reply;
        try { reply = await session.ExchangeAsync(request, patience, ct).ConfigureAwait(false); }
        catch (PeerDisconnectedException e) { return (null, Failed(span, new StepFailure(session.FirstHop, e.Message, "disconnected", false))); }
        catch (TimeoutException e) { return (null, Failed(span, new StepFailure(null, e.Message, "timeout", false))); }
        var took = _time.GetElapsedTime(sentAt);
        if (took > _options.SlowStepThreshold) LogSlowStep(_job, step, session.Route.ToString(), took.TotalMilliseconds, reply.GetType().Name);
        if (reply is TokenResult tr)
        {
            var receivedAt = _time.GetUtcNow();
            if (session.Check is not null && _checker is not null)
            {
                var verdict = await _checker.VerifyAsync(session, request, tr, took, () => [.. _spec.Prompt.Concat(_tokens).Concat(draft).Select(t => (long)t)], ct).ConfigureAwait(false);
                if (verdict.Outcome is CheckOutcome.Caught or CheckOutcome.Undecided)
                    return (null, Failed(span, new StepFailure(verdict.Culprit, verdict.Reason, verdict.Outcome == CheckOutcome.Caught ? "banned" : "unverified", false)));
            }
            int[]? produced = _speculation is null ? (tr.Accepted.Length <= 1 ? [tr.TokenId] : null) : _speculation.Accept(draft, tr.TokenId, tr.Accepted);
            if (produced is null)
                return (null, Failed(span, new StepFailure(session.Route.Hops[^1].NodeId,
                    $"the last stage accepted [{string.Join(",", tr.Accepted)}], which is not a prefix of the draft [{string.Join(",", draft)}] and one token", "bad_acceptance", false)));
            if (_speculation is not null) span?.SetTag("swarm.accepted_tokens", produced.Length - 1);
            _speculation?.Drafted(draftCount > 0 ? tr.Drafted[..Math.Min(tr.Drafted.Length, draftCount)] : [], known + produced.Length);
            _stepAt = (receivedAt, [.. session.Route.NodeIds]);
            if (kind == StepKind.Decode)
                _recentStepMs = _recentStepMs == 0 ? took.TotalMilliseconds : 0.8 * _recentStepMs + 0.2 * took.TotalMilliseconds;
            _cached = known + produced.Length - 1;   // the accepted drafts' positions are valid; the rejected ones are not
            _timings.Add(kind, tr.Timings);
            if (kind == StepKind.Prefill) _prompt.Read(tr);
            _lastLogprobs = tr.Logprobs;
            if (_shown is not null && tr.Logprobs is null)
                throw new JobFailedException($"node {session.Route.Hops[^1].NodeId} sent no logprobs with the token", 500, "logprobs_missing");
            return (produced, default);
        }
        var sf = (StepFailed)reply;
        var failure = Failed(span, new StepFailure(sf.NodeId, sf.Message, sf.Code.ToString(), sf.Code == ErrorCode.Overloaded));
        if (sf.Code is ErrorCode.BadRequest)
            throw new JobFailedException($"node {sf.NodeId} rejected the step: {sf.Message}", 500, "step_rejected");
        return (null, failure);
    }

    private static StepFailure Failed(Activity? span, StepFailure f)
    {
        SwarmTelemetry.RecordFailure(span, CoordinatorInstrumentation.StepFailedEvent, f.Node, f.Reason, f.Code);
        return f;
    }

    /// <summary>Records a new token and streams it with the text it releases; true when it ends the job (a stop token or stop sequence).</summary>
    private async Task<bool> AcceptAsync(int token, Func<JobDelta, ValueTask>? onDelta)
    {
        _tokens.Add(token);
        _through.Add(_stepAt);
        bool first = _tokens.Count == 1;
        double gapMs = Progress.TokenGenerated();
        CoordinatorInstrumentation.TokensGenerated.Add(1);
        (first ? CoordinatorInstrumentation.TimeToFirstToken : CoordinatorInstrumentation.TimePerOutputToken).Record(gapMs / 1000);
        // A stop token's own text is not part of the completion; a character its predecessors left incomplete is U+FFFD.
        string released;
        bool stop;
        if (_stop.IsStopToken(token))
        {
            string tail = _decoder?.Flush() ?? "";
            _shown?.AppendTail(tail);
            (released, stop) = (_stop.Finish(tail), true);
        }
        else
        {
            string piece = _decoder?.Push(token) ?? "";
            _shown?.Add(token, piece, _lastLogprobs!);
            (released, stop) = _stop.Push(piece);
        }
        // With logprobs, a delta shows the text of whole tokens (see ShownTokens): the same text overall, never a stop sequence.
        var shown = _shown?.Release(released, stop, _decoder?.HoldsBytes ?? false);
        var delta = new JobDelta(_id, [token], shown is null ? released : string.Concat(shown.Select(s => s.Text))) { Logprobs = shown };
        if (_stream is not null) await _stream.AddAsync(delta, _stepAt.At, _stepAt.Nodes).ConfigureAwait(false);
        else if (onDelta is not null) await onDelta(delta).ConfigureAwait(false);
        return stop;
    }

    /// <summary>Sends the echoed prompt as the first delta (no token ids), once it is known.</summary>
    private async Task EchoAsync(Func<JobDelta, ValueTask>? onDelta)
    {
        var echo = _prompt.Echo!;
        if (onDelta is null) return;
        await onDelta(new JobDelta(_id, [], string.Concat(echo.Select(e => e.Text)))
        {
            Logprobs = _spec.Logprobs is null ? null : echo, IsEcho = true,
        }).ConfigureAwait(false);
    }

    /// <summary>Forgets the failed route (reporting the culprit unless it was only overloaded); fails the job past the limit.</summary>
    private async Task RecoverAsync(int step, StepFailure f, Activity? jobSpan, CancellationToken ct)
    {
        int recoveries = Progress.Recovered();
        _onRecovery?.Invoke();
        CoordinatorInstrumentation.Recovered(f.Code);
        jobSpan?.AddEvent(SwarmTelemetry.FailureEvent(CoordinatorInstrumentation.RecoveryEvent, f.Node, f.Reason, f.Code, step));
        LogRecovery(_job, step, f.Node?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "?", f.Reason);
        var registry = _sessions.Registry;
        if (f.Node is { } culprit && !f.Overloaded && registry.Get(culprit) is not null) registry.ReportFailure(culprit);
        _session!.Release();
        _session = null;
        _cached = 0;
        if (recoveries > _options.MaxRecoveriesPerJob)
            throw new JobFailedException($"gave up after {recoveries - 1} route repairs at step {step}: {f.Reason}", 503, "recovery_failed");
        if (f.Overloaded) await Task.Delay(_options.OverloadBackoff * recoveries, _time, ct).ConfigureAwait(false);
    }

    [LoggerMessage(200, LogLevel.Warning, "job {Job} step {Step}: route failed at node {Node} ({Reason}); re-routing and replaying")]
    private partial void LogRecovery(long job, int step, string node, string reason);
    [LoggerMessage(203, LogLevel.Warning, "job {Job}: a node it used was banned; generating tokens {From}..{To} again on other nodes")]
    private partial void LogRewind(long job, int from, int to);
    [LoggerMessage(202, LogLevel.Warning, "job {Job} step {Step} took {Ms:F0} ms on route {Route} (reply {Reply})")]
    private partial void LogSlowStep(long job, int step, string route, double ms, string reply);
}
