using Swarm.Protocol;

namespace Swarm.Node.Scheduling;

/// <summary>
/// Decides, iteration by iteration, what a stage runs for its sessions (continuous batching) — on plain numbers:
/// block counts, lengths, token budgets and an injected clock, no tensors. It keeps the KV block ledger: how many
/// blocks each session holds out of <see cref="TotalBlocks"/>; every change to it is reported as a <see cref="KvChange"/>
/// so the executor applies the same change to its real block pool.
/// <list type="bullet">
/// <item>Admission: a new session waits, in arrival order, until the blocks of its first step plus
/// <see cref="BatchingOptions.AdmissionHeadroomBlocks"/> per running session are free (no overtaking).</item>
/// <item>Selection (<see cref="Plan"/>): every admitted session's head step, decodes first, then in arrival order,
/// prefills in chunks of at most <see cref="BatchingOptions.PrefillChunk"/>, all within
/// <see cref="BatchingOptions.MaxBatchTokens"/>, on the layer range of the first candidate. Beside decodes, prefills
/// take a bounded share (<see cref="BatchingOptions.MinPrefillWhileDecoding"/>), so a prompt arriving while others
/// decode is fed in slices that do not stall them.</item>
/// <item>Preemption: when nothing can run because sessions cannot grow, the youngest block-holding session is dropped
/// (its steps fail with <see cref="ErrorCode.Overloaded"/>; the coordinator replays the job) — at once when every
/// block-holding session is blocked here, otherwise only after <see cref="BatchingOptions.PreemptAfter"/>, since
/// sessions whose step is on another stage may come back and finish.</item>
/// <item>Expiry: sessions idle longer than a TTL give their blocks back.</item>
/// </list>
/// Not thread-safe: one compute thread owns it. A plan with chunks must be <see cref="Complete"/>d or
/// <see cref="Abandon"/>ed before anything else changes the scheduler.
/// </summary>
/// <typeparam name="T">The executor's data per step (input tensor, request); never looked at.</typeparam>
internal sealed class BatchScheduler<T>
{
    private sealed class Session(long id, LayerRange layers, DateTimeOffset now)
    {
        public long Id { get; } = id;
        public LayerRange Layers { get; } = layers;
        public int Length { get; set; }
        public int Blocks { get; set; }
        public DateTimeOffset LastUsed { get; set; } = now;
        public long AdmittedOrder { get; set; } = -1;
        public bool Admitted => AdmittedOrder >= 0;
        public Queue<ScheduledStep<T>> Steps { get; } = new();
    }

    private const int RememberPreempted = 4096;

    private readonly Dictionary<long, Session> _sessions = new();
    private readonly List<Session> _waiting = [];
    private readonly HashSet<long> _preempted = [];      // recently preempted sessions: their next step is told why
    private readonly Queue<long> _preemptedOrder = new();
    private readonly BatchingOptions _options;
    private readonly TimeProvider _time;
    private readonly Action<KvChange>? _onKvChange;
    private long _admissions, _sequence, _steps, _tokens, _iterations, _preemptions;
    private int _usedBlocks, _peakBatch, _lastBatch;
    private DateTimeOffset? _blockedSince;
    private IterationPlan<T>? _open;

    /// <param name="totalBlocks">KV blocks of the pool (≥ 1).</param>
    /// <param name="options">Batching settings (default <see cref="BatchingOptions"/>).</param>
    /// <param name="time">Clock for preemption waits and expiry (default the system clock).</param>
    /// <param name="onKvChange">Called after every change to the block ledger, in order.</param>
    public BatchScheduler(int totalBlocks, BatchingOptions? options = null, TimeProvider? time = null, Action<KvChange>? onKvChange = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(totalBlocks, 1);
        _options = options ?? new BatchingOptions();
        _options.Validate();
        _time = time ?? TimeProvider.System;
        _onKvChange = onKvChange;
        TotalBlocks = totalBlocks;
    }

    /// <summary>Blocks in the pool.</summary>
    public int TotalBlocks { get; }
    /// <summary>Positions per block.</summary>
    public int BlockSize => _options.BlockSize;
    /// <summary>Blocks held by sessions.</summary>
    public int UsedBlocks => _usedBlocks;
    /// <summary>Blocks nobody holds.</summary>
    public int FreeBlocks => TotalBlocks - _usedBlocks;
    /// <summary>Positions the pool holds, summed over sessions.</summary>
    public long TokenCapacity => (long)TotalBlocks * BlockSize;
    /// <summary>Sessions known here (admitted or waiting).</summary>
    public int Sessions => _sessions.Count;
    /// <summary>Sessions waiting for blocks.</summary>
    public int WaitingSessions => _waiting.Count;
    /// <summary>Steps queued (not finished) over all sessions.</summary>
    public int PendingSteps => _sessions.Values.Sum(s => s.Steps.Count);
    /// <summary>Positions cached, summed over sessions.</summary>
    public long CachedTokens => _sessions.Values.Sum(s => (long)s.Length);
    /// <summary>Steps finished.</summary>
    public long StepsServed => _steps;
    /// <summary>Positions of finished steps.</summary>
    public long TokensServed => _tokens;
    /// <summary>Iterations that ran at least one chunk.</summary>
    public long Iterations => _iterations;
    /// <summary>Sessions preempted so far.</summary>
    public long Preemptions => _preemptions;
    /// <summary>Most chunks one iteration ran.</summary>
    public int PeakBatch => _peakBatch;
    /// <summary>Chunks the last iteration ran.</summary>
    public int LastBatch => _lastBatch;

    /// <summary>True when <see cref="Plan"/> has something to do: a step of an admitted session, or a waiting session that fits.</summary>
    public bool HasWork => _sessions.Values.Any(s => s.Admitted && s.Steps.Count > 0) || (_waiting.Count > 0 && CanAdmit(_waiting[0]));

    /// <summary>
    /// While nothing can run for lack of blocks: how long until <see cref="Plan"/> preempts (zero when it would now);
    /// null when not blocked. The compute loop waits this long for new work instead of spinning.
    /// </summary>
    public TimeSpan? PreemptionDueIn =>
        _blockedSince is { } since ? TimeSpan.FromTicks(Math.Max(0, (_options.PreemptAfter - (_time.GetUtcNow() - since)).Ticks)) : null;

    /// <summary>Blocks needed for <paramref name="tokens"/> positions.</summary>
    public int BlocksFor(int tokens) => (int)(((long)tokens + BlockSize - 1) / BlockSize);

    /// <summary>The session as the scheduler sees it; null when unknown.</summary>
    public SessionView? Find(long sessionId) => _sessions.TryGetValue(sessionId, out var s)
        ? new SessionView(s.Layers, s.Length, s.Blocks, s.Admitted, s.Steps.Count) : null;

    /// <summary>
    /// Why a step of <paramref name="tokens"/> positions from <paramref name="start"/> on <paramref name="layers"/> cannot
    /// be queued (pool too small, unknown or preempted session, other layers), or null when it can.
    /// </summary>
    public StepException? Check(long sessionId, LayerRange layers, int start, int tokens)
    {
        if (start < 0 || tokens < 1) return new StepException(ErrorCode.BadRequest, $"a step needs a position ≥ 0 and ≥ 1 token (got {start}, {tokens})");
        long need = ((long)start + tokens + BlockSize - 1) / BlockSize;
        if (need > TotalBlocks)
            return new StepException(ErrorCode.OutOfMemory, $"the step needs {(long)start + tokens} KV positions; this node's pool holds {TokenCapacity}");
        if (_sessions.TryGetValue(sessionId, out var s))
            return s.Layers.Equals(layers) ? null : new StepException(ErrorCode.BadRequest, $"session {sessionId} uses layers {s.Layers} here, not {layers}");
        if (start != 0 && _preempted.Contains(sessionId))
            return new StepException(ErrorCode.Overloaded, $"session {sessionId} was preempted (KV cache full); replay it");
        if (start != 0)
            return new StepException(ErrorCode.UnknownSession, $"session {sessionId} is unknown here (expired or never opened) and the step starts at position {start}");
        return null;
    }

    /// <summary>Queues a step (a new session waits for admission).</summary>
    /// <exception cref="StepException">What <see cref="Check"/> reports.</exception>
    public ScheduledStep<T> Enqueue(long sessionId, LayerRange layers, int start, int tokens, T payload)
    {
        if (Check(sessionId, layers, start, tokens) is { } error) throw error;
        if (!_sessions.TryGetValue(sessionId, out var s))
        {
            s = new Session(sessionId, layers, _time.GetUtcNow());
            _sessions[sessionId] = s;
            _waiting.Add(s);
        }
        var step = new ScheduledStep<T>(sessionId, start, tokens, _sequence++, payload);
        s.Steps.Enqueue(step);
        return step;
    }

    /// <summary>
    /// Plans one iteration: admits waiting sessions that fit, then takes each admitted session's head step (decodes
    /// first, then in arrival order; prefills chunked) within the token budget, reserving the blocks they need.
    /// When nothing can run for lack of blocks it may preempt (see the class summary).
    /// </summary>
    public IterationPlan<T> Plan()
    {
        if (_open is not null) throw new InvalidOperationException("the previous plan was neither completed nor abandoned");
        var failed = new List<FailedStep<T>>();
        var chunks = new List<PlannedChunk<T>>();
        Admit();
        var candidates = _sessions.Values.Where(s => s.Admitted && s.Steps.Count > 0)
            .OrderBy(s => s.Steps.Peek().Remaining > 1)   // decodes first: they are latency-critical and cheap
            .ThenBy(s => s.Steps.Peek().Sequence)
            .ToList();
        var range = candidates.Count > 0 ? candidates[0].Layers : default;
        int budget = _options.MaxBatchTokens;
        int prefillBudget = PrefillShare(candidates, range);
        bool blocked = false;
        foreach (var s in candidates)
        {
            if (!s.Layers.Equals(range)) continue; // another layer range runs in a later iteration
            var step = s.Steps.Peek();
            bool decode = step.Remaining == 1;
            int count = Math.Min(Math.Min(step.Remaining, _options.PrefillChunk), decode ? budget : Math.Min(budget, prefillBudget));
            if (count <= 0) break; // decodes come first: what is left are prefills, and their share is spent
            if (!step.Prepared)
            {
                if (step.StartPosition > s.Length)
                {
                    s.Steps.Dequeue();
                    failed.Add(new(step, new StepException(ErrorCode.UnknownSession, $"session {s.Id} holds {s.Length} positions; step starts at {step.StartPosition}")));
                    continue;
                }
                // A retried or replayed step overwrites its positions. (A new session's step starts at its length, 0,
                // and keeps the blocks its admission reserved for the whole prompt.)
                if (step.StartPosition < s.Length) Truncate(s, step.StartPosition);
                step.Prepared = true;
            }
            if (!TryReserve(s, s.Length + count)) { blocked = true; continue; }
            chunks.Add(new PlannedChunk<T>(step, step.Done, count));
            budget -= count;
            if (!decode) prefillBudget -= count;
        }
        var plan = new IterationPlan<T>(range, chunks, failed);
        if (chunks.Count > 0) { _blockedSince = null; _open = plan; }
        else if (blocked) MaybePreempt(failed);
        else _blockedSince = null;
        return plan;
    }

    /// <summary>
    /// Prefill positions an iteration on <paramref name="range"/> may take: unlimited without decodes, else the largest of
    /// the floor, the decode count and the queued prefill positions spread over <see cref="BatchingOptions.PrefillSpread"/>.
    /// </summary>
    private int PrefillShare(List<Session> candidates, LayerRange range)
    {
        int decodes = 0;
        long queued = 0;
        foreach (var s in candidates)
        {
            if (!s.Layers.Equals(range)) continue;
            int remaining = s.Steps.Peek().Remaining;
            if (remaining == 1) decodes++;
            else queued += remaining;
        }
        if (decodes == 0) return int.MaxValue;
        long spread = (queued + _options.PrefillSpread - 1) / _options.PrefillSpread;
        return (int)Math.Min(int.MaxValue, Math.Max(Math.Max(_options.MinPrefillWhileDecoding, decodes), spread));
    }

    /// <summary>The plan's forward pass ran: advances its steps and sessions; returns the steps that finished (in batch order).</summary>
    public IReadOnlyList<ScheduledStep<T>> Complete(IterationPlan<T> plan)
    {
        TakeOpen(plan);
        var now = _time.GetUtcNow();
        var finished = new List<ScheduledStep<T>>();
        foreach (var chunk in plan.Chunks)
        {
            var s = _sessions[chunk.Step.SessionId];
            chunk.Step.Done += chunk.Count;
            s.Length += chunk.Count;
            s.LastUsed = now;
            if (chunk.Step.Remaining > 0) continue;
            if (!ReferenceEquals(s.Steps.Dequeue(), chunk.Step)) throw new InvalidOperationException("a finished step was not its session's head");
            _steps++;
            _tokens += chunk.Step.Tokens;
            finished.Add(chunk.Step);
        }
        _iterations++;
        _peakBatch = Math.Max(_peakBatch, plan.Chunks.Count);
        _lastBatch = plan.Chunks.Count;
        return finished;
    }

    /// <summary>The plan's forward pass failed: its sessions' caches may be half-written, so they are dropped (all their steps fail).</summary>
    public IReadOnlyList<FailedStep<T>> Abandon(IterationPlan<T> plan, StepException error)
    {
        TakeOpen(plan);
        var failed = new List<FailedStep<T>>();
        foreach (var id in plan.Chunks.Select(c => c.Step.SessionId).Distinct().ToList())
            if (_sessions.TryGetValue(id, out var s)) Drop(s, failed, error);
        return failed;
    }

    /// <summary>Drops a session (its blocks return); its queued steps fail with <paramref name="reason"/>. Null when it was not here.</summary>
    public IReadOnlyList<FailedStep<T>>? Close(long sessionId, StepException reason)
    {
        ThrowIfPlanOpen();
        if (!_sessions.TryGetValue(sessionId, out var s)) return null;
        var failed = new List<FailedStep<T>>();
        Drop(s, failed, reason);
        return failed;
    }

    /// <summary>Drops sessions with no queued step and unused for longer than <paramref name="ttl"/>; returns their ids.</summary>
    public IReadOnlyList<long> ExpireIdle(TimeSpan ttl)
    {
        ThrowIfPlanOpen();
        var now = _time.GetUtcNow();
        var stale = _sessions.Values.Where(s => s.Steps.Count == 0 && now - s.LastUsed > ttl).ToList();
        foreach (var s in stale) Drop(s, [], new StepException(ErrorCode.Cancelled, $"session {s.Id} expired"));
        return stale.Select(s => s.Id).ToList();
    }

    /// <summary>Drops every session (e.g. before the stage is unloaded); every queued step fails with <paramref name="reason"/>.</summary>
    public IReadOnlyList<FailedStep<T>> CloseAll(StepException reason)
    {
        _open = null;
        var failed = new List<FailedStep<T>>();
        foreach (var s in _sessions.Values.ToList()) Drop(s, failed, reason);
        return failed;
    }

    private bool CanAdmit(Session s)
    {
        if (s.Steps.Count == 0) return false;
        var head = s.Steps.Peek();
        int running = _sessions.Count - _waiting.Count;
        // Keep spare blocks per running session so they can grow; an empty pool admits anything that fits.
        return BlocksFor(head.StartPosition + head.Tokens) + running * _options.AdmissionHeadroomBlocks <= FreeBlocks;
    }

    private void Admit()
    {
        while (_waiting.Count > 0 && CanAdmit(_waiting[0]))
        {
            var s = _waiting[0];
            _waiting.RemoveAt(0);
            var head = s.Steps.Peek();
            if (!TryReserve(s, head.StartPosition + head.Tokens)) throw new InvalidOperationException("admission reserved fewer blocks than it checked");
            s.AdmittedOrder = _admissions++;
        }
    }

    private void MaybePreempt(List<FailedStep<T>> failed)
    {
        var now = _time.GetUtcNow();
        _blockedSince ??= now;
        bool allHere = _sessions.Values.Where(s => s.Admitted && s.Blocks > 0).All(s => s.Steps.Count > 0);
        if (!allHere && now - _blockedSince.Value < _options.PreemptAfter) return; // a session elsewhere may still free blocks
        _blockedSince = null;
        var victim = _sessions.Values.Where(s => s.Admitted && s.Blocks > 0).MaxBy(s => s.AdmittedOrder);
        if (victim is null) return;
        _preemptions++;
        if (_preempted.Add(victim.Id)) _preemptedOrder.Enqueue(victim.Id);
        while (_preemptedOrder.Count > RememberPreempted) _preempted.Remove(_preemptedOrder.Dequeue());
        Drop(victim, failed, new StepException(ErrorCode.Overloaded,
            $"KV cache full ({UsedBlocks}/{TotalBlocks} blocks): session {victim.Id} preempted; replay it"));
    }

    private bool TryReserve(Session s, int length)
    {
        int missing = BlocksFor(length) - s.Blocks;
        if (missing <= 0) return true;
        if (missing > FreeBlocks) return false;
        s.Blocks += missing;
        _usedBlocks += missing;
        _onKvChange?.Invoke(new KvChange(KvChangeKind.Reserve, s.Id, length));
        return true;
    }

    private void Truncate(Session s, int length)
    {
        int keep = BlocksFor(length);
        s.Length = length;
        if (keep < s.Blocks)
        {
            _usedBlocks -= s.Blocks - keep;
            s.Blocks = keep;
        }
        _onKvChange?.Invoke(new KvChange(KvChangeKind.Truncate, s.Id, length));
    }

    private void Drop(Session s, List<FailedStep<T>> failed, StepException reason)
    {
        while (s.Steps.TryDequeue(out var step)) failed.Add(new(step, reason));
        _usedBlocks -= s.Blocks;
        s.Blocks = 0;
        s.Length = 0;
        _sessions.Remove(s.Id);
        _waiting.Remove(s);
        _onKvChange?.Invoke(new KvChange(KvChangeKind.Release, s.Id, 0));
    }

    private void TakeOpen(IterationPlan<T> plan)
    {
        if (plan.Chunks.Count == 0) return;
        if (!ReferenceEquals(plan, _open)) throw new InvalidOperationException("this plan is not the open one");
        _open = null;
    }

    private void ThrowIfPlanOpen()
    {
        if (_open is not null) throw new InvalidOperationException("complete or abandon the open plan first");
    }
}
