using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Swarm.Coordinator.Speculation;
using Swarm.Coordinator.Telemetry;
using Swarm.Coordinator.Verification;
using Swarm.Protocol;
using Swarm.Telemetry;
using Swarm.Tokenization;
using Swarm.Transport;

namespace Swarm.Coordinator.Jobs;

/// <summary>
/// Generates one job's tokens: the prefill, then one decode step per token (N+1 messages for N stages: the last stage
/// samples), each through the job's <see cref="RouteSession"/>, until the token limit, the context length or a stop
/// condition. When a step fails — a hop answers <see cref="StepFailed"/>, the first hop is disconnected, a node of the
/// route is lost or stays silent past the step's patience, or nothing answers within the step timeout — the loop reports
/// the culprit to the registry, releases the session, opens one on a new route and replays the step there from
/// position 0 (prompt + tokens so far), so every stage recomputes its KV cache from the token ids and generation resumes
/// at the same step with the same seeded draw. A node that refuses a step as overloaded (its KV pool is full) is under
/// pressure, not faulty: it is not reported, and the replay waits a back-off first.
/// A spot-checked step is accepted at once; its check (<see cref="JobSpotChecks"/>) is judged when the shadow answers,
/// between later steps, and the job completes only once all are judged. Tokens a ban or a failed check takes back
/// (<see cref="JobRewinds"/>) are generated again on other nodes — or, already streamed, end the job with <c>node_banned</c>.
/// With <see cref="VerificationOptions.StreamVerifiedOnly"/> a stream holds tokens through nodes on probation until their
/// checks pass (<see cref="VerifiedStream"/>), so a ban rewinds them before they were sent.
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
    private JobRewinds? _rewinds;
    private JobSpotChecks? _checks;
    private JobReplyInbox? _inbox;
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
        using var inbox = _inbox = _sessions.OpenInbox(_job);
        using var rewinds = _rewinds = new JobRewinds(_bans);
        if (_checker is not null) _checks = new JobSpotChecks(_checker, inbox, _time);
        if (onDelta is not null && _checker is not null && _options.Verification.StreamVerifiedOnly)
            _stream = new VerifiedStream(onDelta, _sessions.Registry, _checker);
        try
        {
            if (_prompt.Echo is not null) await EchoAsync(onDelta).ConfigureAwait(false);
            string finish;
            // The job completes only once every check of its steps was judged; one that rewound tokens generates them again.
            while (true)
            {
                finish = await GenerateAsync(onDelta, maxNew, steps, jobSpan, ct).ConfigureAwait(false);
                await SettleChecksAsync(wait: true, ct).ConfigureAwait(false);
                int kept = _tokens.Count;
                Rewind(onDelta is not null);
                if (_tokens.Count == kept) break;
            }
            if (_stream is not null) await _stream.ReleaseAsync(all: true).ConfigureAwait(false);
            if (finish == "stop") return new StepLoopResult("stop", _timings.MeansOver(_session?.Route));
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
            _session?.Release();
            _checks?.DropAll();
        }
    }

    /// <summary>Generates tokens until the limit (<c>length</c>) or a stop condition (<c>stop</c>), judging checks that are due between steps.</summary>
    private async Task<string> GenerateAsync(Func<JobDelta, ValueTask>? onDelta, int maxNew, int steps, Activity? jobSpan, CancellationToken ct)
    {
        while (_tokens.Count < steps)
        {
            int step = _tokens.Count;
            int[]? accepted = null;
            while (true)
            {
                ct.ThrowIfCancellationRequested();
                if (Rewind(onDelta is not null)) break;
                _session ??= await _sessions.OpenAsync(_inbox!, ct, _checker, alwaysOnProbation: _stream is not null).ConfigureAwait(false);
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
                if (await AcceptAsync(token, onDelta).ConfigureAwait(false)) return "stop";
            }
            await SettleChecksAsync(wait: false, ct).ConfigureAwait(false);
            if (_tokens.Count >= maxNew) break;
        }
        return "length";
    }

    /// <summary>Judges the checks whose shadows answered (with <paramref name="wait"/>: all, each up to its patience); releases held tokens.</summary>
    private async Task SettleChecksAsync(bool wait, CancellationToken ct)
    {
        if (_checks is null || _checks.Count == 0) return;
        foreach (var (check, result) in await _checks.SettleAsync(wait, ct).ConfigureAwait(false))
        {
            if (result.Outcome == CheckOutcome.Caught) _rewinds!.Suspect(check.TokenIndex, result.Reason, "node_banned");
            if (result.Outcome != CheckOutcome.Undecided) continue;
            _rewinds!.Suspect(check.TokenIndex, result.Reason, "unverified");
            CountRecovery(check.TokenIndex, "unverified", result.Reason);
        }
        if (_stream is not null) await _stream.ReleaseAsync(all: false).ConfigureAwait(false);
    }

    /// <summary>
    /// Drops what <see cref="JobRewinds"/> collected (tokens through a banned node, or from a failed or undecided check of
    /// this job's) so it is generated again — from the held ones of a <see cref="VerifiedStream"/> too — with their checks,
    /// and the route; true when it did, or when a node of the route was banned (its answer just received is not accepted).
    /// </summary>
    private bool Rewind(bool streamed)
    {
        int sent = _stream?.Sent ?? (streamed ? _tokens.Count : 0);
        var (from, routeBanned) = _rewinds!.Collect(_through, sent, _shown is not null, _session?.Route.NodeIds ?? []);
        if (from == _tokens.Count && !routeBanned) return false;
        if (from < _tokens.Count)
        {
            LogRewind(_job, from, _tokens.Count);
            Progress.Rewound(_tokens.Count - from);
            _stream?.DropFrom(from);
            _tokens.RemoveRange(from, _tokens.Count - from);
            _through.RemoveRange(from, _through.Count - from);
            _stop = new StopDetector(_spec.Sampling.StopTokenIds, _spec.StopSequences);
            _decoder = _tokenizer is null ? null : new IncrementalDecoder(_tokenizer);
            foreach (int t in _tokens) _stop.Push(_decoder?.Push(t) ?? "");
        }
        _checks?.DropFrom(from);
        _session?.Release();
        _session = null;
        _cached = 0;
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
        using var span = CoordinatorInstrumentation.StartStep(step, kind.ToString().ToLowerInvariant(), session.Id, input.Length,
            _speculation is null ? null : draft.Length);
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
            int[]? produced = _speculation is null ? (tr.Accepted.Length <= 1 ? [tr.TokenId] : null) : _speculation.Accept(draft, tr.TokenId, tr.Accepted);
            if (produced is null)
            {
                // No honest last stage answers this (it is self-contradictory), so it is proof enough: with verification on,
                // the node is banned at once, without arbitration — the ban rewinds what it touched, the step is re-routed.
                int last = session.Route.Hops[^1].NodeId;
                string why = $"the last stage accepted [{string.Join(",", tr.Accepted)}], which is not a prefix of the draft [{string.Join(",", draft)}] and one token";
                if (_checker is not null) _checker.ConvictSelfContradiction(last, $"node {last}: {why} at step {step}", receivedAt);
                else _bans?.Ban(last, $"node {last}: {why} at step {step}", receivedAt);
                return (null, Failed(span, new StepFailure(last, why, "bad_acceptance", false)));
            }
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
            // Accepted at once; the check is judged when the shadow's answer arrives (JobSpotChecks).
            if (session.Check is { } plan && _checks is not null)
                _checks.Add(session, plan, _tokens.Count, request, tr, receivedAt, took, [.. _spec.Prompt.Concat(_tokens).Concat(draft).Select(t => (long)t)]);
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
        jobSpan?.AddEvent(SwarmTelemetry.FailureEvent(CoordinatorInstrumentation.RecoveryEvent, f.Node, f.Reason, f.Code, step));
        LogRecovery(_job, step, f.Node?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "?", f.Reason);
        var registry = _sessions.Registry;
        if (f.Node is { } culprit && !f.Overloaded && registry.Get(culprit) is not null) registry.ReportFailure(culprit);
        _session!.Release();
        _session = null;
        _cached = 0;
        int recoveries = CountRecovery(step, f.Code, f.Reason);
        if (f.Overloaded) await Task.Delay(_options.OverloadBackoff * recoveries, _time, ct).ConfigureAwait(false);
    }

    /// <summary>Counts a route repair (or a rewind after an undecided check); fails the job past the limit.</summary>
    private int CountRecovery(int step, string code, string reason)
    {
        int recoveries = Progress.Recovered();
        _onRecovery?.Invoke();
        CoordinatorInstrumentation.Recovered(code);
        return recoveries <= _options.MaxRecoveriesPerJob ? recoveries
            : throw new JobFailedException($"gave up after {recoveries - 1} route repairs at step {step}: {reason}", 503, "recovery_failed");
    }

    [LoggerMessage(200, LogLevel.Warning, "job {Job} step {Step}: route failed at node {Node} ({Reason}); re-routing and replaying")]
    private partial void LogRecovery(long job, int step, string node, string reason);
    [LoggerMessage(203, LogLevel.Warning, "job {Job}: a node it used was banned or a check of its steps failed; generating tokens {From}..{To} again on other nodes")]
    private partial void LogRewind(long job, int from, int to);
    [LoggerMessage(202, LogLevel.Warning, "job {Job} step {Step} took {Ms:F0} ms on route {Route} (reply {Reply})")]
    private partial void LogSlowStep(long job, int step, string route, double ms, string reply);
}
