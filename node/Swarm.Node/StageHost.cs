using Swarm.Engine;
using Swarm.Model;
using Swarm.Node.Drafting;
using Swarm.Node.Scheduling;
using Swarm.Node.Verification;
using Swarm.Protocol;
using static TorchSharp.torch;

namespace Swarm.Node;

/// <summary>
/// Runs a loaded stage for many sessions with continuous (iteration-level) batching: the executor of the
/// <see cref="BatchScheduler{T}"/>'s plans. Steps are <see cref="Submit"/>ted as they arrive (validated, their input
/// copied into a tensor, queued in the scheduler); each <see cref="RunIteration"/> asks the scheduler for a plan —
/// every pending decode plus prefill chunks up to a token budget — runs it through one batched forward
/// (<see cref="StageModel.ForwardBatch"/>) over the paged <see cref="KvBlockPool"/> and returns the steps that finished:
/// hidden states for the next hop, or on the last stage the token sampled with the step's own sampling parameters.
/// The pool is sized by the memory budget; the scheduler decides admission, preemption and expiry and the host
/// applies each of its block changes to the pool. Not thread-safe: one compute thread owns it (TorchSharp dispose
/// scopes and inference mode are per thread); <see cref="Stats"/> may be read from anywhere. A node's
/// <see cref="StageWorker"/> and <c>swarm run</c>'s <see cref="LocalPipeline"/> both run their steps through it.
/// </summary>
public sealed class StageHost : IDisposable
{
    private readonly BatchScheduler<QueuedStep> _scheduler;
    private readonly KvBlockPool _pool;
    private readonly Dictionary<long, KvSequence> _kv = new();
    private readonly List<StepCompletion> _ready = [];
    private readonly TimeProvider _time;
    private readonly StepFault? _fault;
    private readonly DraftModelRunner? _drafter;
    private readonly bool _fingerprints;
    private readonly bool _leaveModelOpen;
    private StageHostStats _stats = null!;

    /// <summary>The layers this host runs.</summary>
    public StageModel Model { get; }
    /// <summary>Layers [Start, End) of <see cref="Model"/>.</summary>
    public LayerRange Range => new(Model.Start, Model.End);
    /// <summary>Most tokens (summed over sessions) the KV pool holds.</summary>
    public long KvTokenCapacity => _scheduler.TokenCapacity;
    /// <summary>Tokens cached, summed over sessions.</summary>
    public long KvTokensUsed => _scheduler.CachedTokens;
    /// <summary>KV blocks held by sessions.</summary>
    public int KvBlocksUsed => _pool.UsedBlocks;
    /// <summary>KV blocks of the pool.</summary>
    public int KvBlocksTotal => _pool.TotalBlocks;
    /// <summary>Sessions known here (running or waiting for blocks).</summary>
    public int Sessions => _scheduler.Sessions;
    /// <summary>Steps finished.</summary>
    public long StepsServed => _scheduler.StepsServed;
    /// <summary>Positions of finished steps.</summary>
    public long TokensServed => _scheduler.TokensServed;
    /// <summary>A snapshot of the counters, readable from other threads.</summary>
    public StageHostStats Stats => Volatile.Read(ref _stats);

    /// <summary>True when <see cref="RunIteration"/> has something to do (a step to run, admit or report).</summary>
    public bool HasWork => _ready.Count > 0 || _scheduler.HasWork;

    /// <summary>
    /// When <see cref="HasWork"/> but an iteration could run nothing (sessions wait for KV blocks that sessions on
    /// other stages hold): how long until an iteration can act without new input (it preempts then). Null otherwise.
    /// </summary>
    public TimeSpan? RetryAfter => _scheduler.PreemptionDueIn;

    /// <param name="model">The loaded stage; the host disposes it unless <paramref name="leaveModelOpen"/>.</param>
    /// <param name="kvBudgetBytes">Memory for the KV pool; at least one full context is always allowed.</param>
    /// <param name="time">Clock of the scheduler and of step timings (default the system clock).</param>
    /// <param name="batching">Batching settings (default <see cref="BatchingOptions"/>).</param>
    /// <param name="fault">An injected fault (the <c>SWARM_FAULT</c> test hook); null for an honest stage.</param>
    /// <param name="fingerprints">
    /// Whether finished steps carry <see cref="StageFingerprint"/>s (default true: a node's outputs can be spot-checked;
    /// one process generating alone has nobody to show them to and skips their cost).
    /// </param>
    /// <param name="leaveModelOpen">True: the caller keeps <paramref name="model"/> and disposes it; default false: the host does.</param>
    /// <param name="drafter">
    /// On a last stage, the node's draft model (kept by the caller): steps that ask for <see cref="ForwardRequest.DraftCount"/>
    /// tokens get them drafted after their own (<see cref="StepOutput.Drafted"/>). Null: none.
    /// </param>
    public StageHost(StageModel model, long kvBudgetBytes, TimeProvider? time = null, BatchingOptions? batching = null, StepFault? fault = null,
        bool fingerprints = true, bool leaveModelOpen = false, DraftModelRunner? drafter = null)
    {
        Model = model;
        _fault = fault;
        _drafter = model.IsLast ? drafter : null;
        _fingerprints = fingerprints;
        _leaveModelOpen = leaveModelOpen;
        _time = time ?? TimeProvider.System;
        batching ??= new BatchingOptions();
        batching.Validate();
        long perToken = Math.Max(1, model.KvBytesPerToken);
        // At least one full context fits, so a single session can always reach the model's limit.
        long tokens = Math.Max(model.MaxTokens, kvBudgetBytes / perToken);
        int blocks = (int)Math.Min(int.MaxValue / batching.BlockSize, (tokens + batching.BlockSize - 1) / batching.BlockSize);
        _pool = model.NewBlockPool(blocks, batching.BlockSize);
        _scheduler = new BatchScheduler<QueuedStep>(blocks, batching, _time, ApplyKv);
        Publish();
    }

    /// <summary>
    /// Queues this node's hop (route[0]) of a step. Problems found at once (bad input, unknown session) come
    /// back as a failed <see cref="StepCompletion"/> from the next <see cref="RunIteration"/>.
    /// </summary>
    public void Submit(ForwardRequest req, object? state = null)
    {
        long now = _time.GetTimestamp();
        try
        {
            var (hop, t, first) = CheckShape(req);
            if (_scheduler.Check(req.SessionId, hop, req.StartPosition, t) is { } refused) throw refused;
            var x = ToInput(req.Input, first, t);
            var input = new QueuedStep(req, state, x, now) { InputFingerprint = first || !_fingerprints ? [] : ActivationFingerprint.Project(x) };
            try { _scheduler.Enqueue(req.SessionId, hop, req.StartPosition, t, input); }
            catch { input.Dispose(); throw; }
        }
        catch (StepException e)
        {
            _ready.Add(new StepCompletion(req, state, null, e));
        }
        Publish();
    }

    private (LayerRange Hop, int Tokens, bool First) CheckShape(ForwardRequest req)
    {
        if (req.Route.Length == 0) throw new StepException(ErrorCode.BadRequest, "empty route");
        var hop = req.Route[0].Layers;
        if (hop.Start < Model.Start || hop.End > Model.End || hop.Start >= hop.End)
            throw new StepException(ErrorCode.RangeNotLoaded, $"this node holds layers {Range}, not {hop}");
        bool first = hop.Start == 0;
        var input = req.Input;
        if (first != (input.DType == WireDType.I64))
            throw new StepException(ErrorCode.BadRequest, first ? "the first stage takes token ids (I64)" : "a middle stage takes hidden states, not token ids");
        int t = (int)(input.Shape.Length >= 2 ? input.Shape[1] : 0);
        if (input.Shape.Length != (first ? 2 : 3) || input.Shape[0] != 1 || t < 1 || (!first && input.Shape[2] != Model.Config.HiddenSize))
            throw new StepException(ErrorCode.BadRequest, $"input of shape [{string.Join(",", input.Shape)}] does not fit layers {hop}");
        // The node's one token-id check, on the wire bytes before any tensor work; checked per step, not in the batch:
        // one bad step must not fail the others it would be batched with.
        if (first && input.FirstTokenIdOutside(Model.Config.VocabSize) is { } bad)
            throw new StepException(ErrorCode.BadRequest, $"token id {bad} is outside the vocabulary [0, {Model.Config.VocabSize})");
        if (hop.End == Model.Config.NumLayers && req.Logprobs is { } lp
            && (lp.Top > Model.Config.VocabSize || lp.ScoredTokenIds.Any(id => id >= Model.Config.VocabSize)))
            throw new StepException(ErrorCode.BadRequest, $"logprobs ask for {lp.Top} top tokens or score a token id outside the vocabulary [0, {Model.Config.VocabSize})");
        if (req.Draft.Length > 0 && (req.Draft.Length >= t || req.Logprobs is not null))
            throw new StepException(ErrorCode.BadRequest, $"a draft of {req.Draft.Length} tokens needs more positions than the step's {t} and no logprobs");
        if (hop.End == Model.Config.NumLayers && req.Draft.Any(id => id < 0 || id >= Model.Config.VocabSize))
            throw new StepException(ErrorCode.BadRequest, $"a drafted token id is outside the vocabulary [0, {Model.Config.VocabSize})");
        if (req.StartPosition < 0 || (long)req.StartPosition + t > Model.MaxTokens)
            throw new StepException(ErrorCode.BadRequest, $"position {(long)req.StartPosition + t} exceeds the model's context of {Model.MaxTokens}");
        return (hop, t, first);
    }

    private Tensor ToInput(WireTensor input, bool first, int t)
    {
        using var scope = NewDisposeScope();
        Tensor x;
        try { x = input.ToTensor(first ? null : Model.ComputeDtype); }
        catch (InvalidDataException e) { throw new StepException(ErrorCode.BadRequest, e.Message); }
        x = first ? x.reshape(t) : x.reshape(t, Model.Config.HiddenSize);
        return x.DetachFromDisposeScope();
    }

    /// <summary>
    /// Runs one iteration: the scheduler's plan (admissions, then every admitted session's ready step — a decode, or
    /// the next chunk of a prefill, within the token budget) through one batched forward; returns the steps that
    /// finished (including ones that failed at submission or while planning, e.g. preempted).
    /// </summary>
    public IReadOnlyList<StepCompletion> RunIteration()
    {
        var done = new List<StepCompletion>(_ready);
        _ready.Clear();
        try
        {
            var plan = _scheduler.Plan();
            Report(plan.Failed, done);
            if (plan.Chunks.Count > 0) Execute(plan, done);
            return done;
        }
        finally { Publish(); }
    }

    private void Execute(IterationPlan<QueuedStep> plan, List<StepCompletion> done)
    {
        bool last = plan.Range.End == Model.Config.NumLayers;
        var items = new List<BatchItem>(plan.Chunks.Count);
        Tensor?[] results;
        CapturedLayer[][] captured;
        try
        {
            foreach (var c in plan.Chunks)
            {
                var step = c.Step.Payload;
                // A step that scores its input (echo) needs every position's logits, chunk by chunk; a verifying one its last positions'.
                bool scores = last && (step.ScoresInput || step.Verifies(c.Offset, c.Count));
                // Hidden states of the last position only come from the step's last chunk.
                var capture = step.Request.HiddenStates is { AllPositions: false } && !c.Completes ? null : step.CaptureLayers;
                items.Add(new BatchItem(step.Input.narrow(0, c.Offset, c.Count), _kv[c.Step.SessionId],
                    WantLogits: last && (c.Completes || scores), AllPositions: scores, CaptureLayers: capture));
            }
            results = Model.ForwardBatchCapturing(items, _pool, plan.Range.Start, plan.Range.End, out captured);
        }
        catch (Exception e)
        {
            // The sessions' caches may be half-written: fail and drop them all (the coordinator recovers the jobs).
            Report(_scheduler.Abandon(plan, new StepException(ErrorCode.Internal, $"{e.GetType().Name}: {e.Message}")), done);
            return;
        }
        finally
        {
            foreach (var it in items) it.Input.Dispose(); // narrow views of the pending inputs
        }
        _scheduler.Complete(plan);
        long now = _time.GetTimestamp();
        var finished = new List<(QueuedStep Step, Tensor? Logits)>(); // fingerprinted in one batch, then finished
        for (int i = 0; i < plan.Chunks.Count; i++)
        {
            var chunk = plan.Chunks[i];
            var step = chunk.Step.Payload;
            var r = results[i];
            step.AddChunk(last ? null : r, captured[i]);
            if (last && r is not null && step.VerifiedPositions > 0)
            {
                // Only some rows of an overlapping chunk are verified: keep those; the step's output is all of them.
                if (step.Verifies(chunk.Offset, chunk.Count)) step.KeepVerified(r, chunk.Offset);
                r.Dispose();
                r = null;
            }
            else if (last && r is not null && step.ScoresInput)
            {
                // All positions' logits [count, V]: score the input, keep the last row for sampling when the step completes.
                var all = r;
                step.ScoreChunk(all, chunk.Offset);
                if (chunk.Completes)
                {
                    using var lastRow = all.select(0, chunk.Count - 1);
                    r = lastRow.clone();
                }
                else r = null;
                all.Dispose();
            }
            if (chunk.Completes) finished.Add((step, last ? r : null));
        }
        var printed = last && _fingerprints && _fault is null ? LastStageSampling.Fingerprints(finished) : null; // a fault corrupts rows first
        for (int i = 0; i < finished.Count; i++) done.Add(Finish(finished[i].Step, last, finished[i].Logits, now, printed?[i]));
    }

    /// <summary>Turns a finished step into its output — the sampled token (<paramref name="printed"/>: its fingerprint if made already), or its hidden states as bytes — and frees its tensors.</summary>
    private StepCompletion Finish(QueuedStep step, bool last, Tensor? logits, long now, StageFingerprint? printed)
    {
        try
        {
            double ms = _time.GetElapsedTime(step.Submitted, now).TotalMilliseconds;
            var captured = step.CapturedHiddenStates();
            using var scope = NewDisposeScope();
            if (last && step.VerifiedPositions > 0) return Verify(step, ms, captured);
            if (logits is not null)
            {
                long t0 = _time.GetTimestamp();
                var (token, logprobs, print) = LastStageSampling.Sample(step, logits, _fault, _fingerprints, printed);
                int[] drafted = _drafter?.Propose(step.Request, [token]) ?? [];
                return new StepCompletion(step.Request, step.State, new StepOutput(null, token, ms, _time.GetElapsedTime(t0).TotalMilliseconds)
                {
                    Logprobs = logprobs, InputLogprobs = step.InputLogprobs, HiddenStates = captured, Fingerprint = print, Drafted = drafted,
                }, null);
            }
            var hidden = step.HiddenTensor();
            if (_fault is not null) hidden = _fault.Corrupt(hidden);
            var fingerprint = _fingerprints ? new StageFingerprint { Input = step.InputFingerprint, Output = ActivationFingerprint.Project(hidden) } : new StageFingerprint();
            // One copy in the compute dtype; the conversion to the wire dtype happens on the forwarder, off this thread.
            var bytes = WireTensorConversion.FromTensor(hidden.unsqueeze(0), ComputeWireDType);
            return new StepCompletion(step.Request, step.State, new StepOutput(bytes, null, ms) { HiddenStates = captured, Fingerprint = fingerprint }, null);
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException)
        {
            return new StepCompletion(step.Request, step.State, null, new StepException(ErrorCode.Internal, e.Message));
        }
        finally
        {
            logits?.Dispose();
            step.Dispose();
        }
    }

    /// <summary>A speculative step on the last stage: the drafts accepted (against the draft model's q when it drafted them), the next token, new drafts.</summary>
    private StepCompletion Verify(QueuedStep step, double ms, LayerHiddenStates[] captured)
    {
        long t0 = _time.GetTimestamp();
        var (accepted, printed) = LastStageSampling.Verify(step, _fault, _drafter?.DistributionsFor(step.Request));
        int[] drafted = _drafter?.Propose(step.Request, accepted) ?? [];
        return new StepCompletion(step.Request, step.State, new StepOutput(null, accepted[0], ms, _time.GetElapsedTime(t0).TotalMilliseconds)
        {
            Accepted = accepted, HiddenStates = captured, Fingerprint = printed, Drafted = drafted,
        }, null);
    }

    private WireDType ComputeWireDType => Model.ComputeDtype switch
    {
        ScalarType.BFloat16 => WireDType.BF16,
        ScalarType.Float16 => WireDType.F16,
        _ => WireDType.F32,
    };

    /// <summary>
    /// Runs one step alone (submit, then iterate until it finishes). Only when nothing else is pending —
    /// the node uses <see cref="Submit"/>/<see cref="RunIteration"/>; this is for callers with one step at a time.
    /// </summary>
    /// <exception cref="StepException">Bad input, unknown session, KV pool too small.</exception>
    public StepOutput Run(ForwardRequest req)
    {
        if (_ready.Count > 0 || _scheduler.PendingSteps > 0)
            throw new InvalidOperationException("Run needs an idle host; use Submit and RunIteration for concurrent steps");
        var marker = new object();
        Submit(req, marker);
        while (true)
        {
            foreach (var c in RunIteration())
                if (ReferenceEquals(c.State, marker))
                    return c.Output ?? throw c.Error!;
        }
    }

    /// <summary>
    /// Frees a session's KV blocks; its queued steps (if any) come back from the next iteration failed with
    /// <see cref="ErrorCode.Cancelled"/> (nobody waits for them). False when it was not here.
    /// </summary>
    public bool Close(long sessionId)
    {
        bool drafted = _drafter?.Close(sessionId) ?? false;
        var failed = _scheduler.Close(sessionId, new StepException(ErrorCode.Cancelled, $"session {sessionId} was closed"));
        if (failed is null) return drafted;
        Report(failed, _ready);
        Publish();
        return true;
    }

    /// <summary>Frees sessions idle (no queued step) longer than <paramref name="ttl"/>; returns how many.</summary>
    public int ExpireIdle(TimeSpan ttl)
    {
        int n = _scheduler.ExpireIdle(ttl).Count;
        _drafter?.ExpireIdle(ttl);
        Publish();
        return n;
    }

    /// <summary>Fails every queued step (e.g. before the stage is unloaded) and closes every session.</summary>
    public IReadOnlyList<StepCompletion> Abort(ErrorCode code, string message)
    {
        var done = new List<StepCompletion>(_ready);
        _ready.Clear();
        Report(_scheduler.CloseAll(new StepException(code, message)), done);
        _drafter?.CloseAll();
        Publish();
        return done;
    }

    private static void Report(IReadOnlyList<FailedStep<QueuedStep>> failed, List<StepCompletion> sink)
    {
        foreach (var (step, error) in failed)
        {
            sink.Add(new StepCompletion(step.Payload.Request, step.Payload.State, null, error));
            step.Payload.Dispose();
        }
    }

    /// <summary>Applies one of the scheduler's block decisions to the pool; the two must agree block for block.</summary>
    private void ApplyKv(KvChange change)
    {
        switch (change.Kind)
        {
            case KvChangeKind.Reserve:
                if (!_kv.TryGetValue(change.SessionId, out var seq)) _kv[change.SessionId] = seq = _pool.NewSequence();
                if (!_pool.TryReserve(seq, change.Length))
                    throw new InvalidOperationException($"the KV pool has {_pool.FreeBlocks} free blocks, fewer than the scheduler counted");
                break;
            case KvChangeKind.Truncate:
                if (_kv.TryGetValue(change.SessionId, out var cut)) _pool.Truncate(cut, change.Length);
                break;
            case KvChangeKind.Release:
                if (_kv.Remove(change.SessionId, out var gone)) _pool.Release(gone);
                break;
        }
        if (_pool.UsedBlocks != _scheduler.UsedBlocks)
            throw new InvalidOperationException($"KV pool holds {_pool.UsedBlocks} blocks, the scheduler counted {_scheduler.UsedBlocks}");
    }

    private void Publish() => Volatile.Write(ref _stats, new StageHostStats(
        _scheduler.Sessions, _scheduler.WaitingSessions, _ready.Count + _scheduler.PendingSteps, _scheduler.CachedTokens, KvTokenCapacity,
        _pool.UsedBlocks, _pool.TotalBlocks, _scheduler.StepsServed, _scheduler.TokensServed, _scheduler.Iterations,
        _scheduler.Preemptions, _scheduler.PeakBatch, _scheduler.LastBatch));

    /// <summary>Frees every queued input, the KV pool and (unless it was left open) the model.</summary>
    public void Dispose()
    {
        foreach (var (step, _) in _scheduler.CloseAll(new StepException(ErrorCode.ShuttingDown, "the stage is unloaded")))
            step.Payload.Dispose();
        _ready.Clear();
        _drafter?.CloseAll();
        _pool.Dispose();
        if (!_leaveModelOpen) Model.Dispose();
    }
}
