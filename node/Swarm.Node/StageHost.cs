using Swarm.Engine;
using Swarm.Model;
using Swarm.Protocol;
using Swarm.Sampling;
using static TorchSharp.torch;

namespace Swarm.Node;

/// <summary>What one step produced on this node: hidden states for the next hop, or the sampled token.</summary>
/// <param name="Milliseconds">From submission to completion (queueing, batched forward passes, sampling).</param>
/// <param name="SampleMilliseconds">Time spent sampling the token (last stage).</param>
public sealed record StepOutput(WireTensor? Hidden, int? Token, double Milliseconds, double SampleMilliseconds = 0);

/// <summary>A step could not run; the code and message go back to the coordinator in a <see cref="StepFailed"/>.</summary>
public sealed class StepException(ErrorCode code, string message) : Exception(message)
{
    public ErrorCode Code { get; } = code;
}

/// <summary>A finished step: <see cref="Output"/> on success, <see cref="Error"/> otherwise; <see cref="State"/> is the submitter's.</summary>
public sealed record StepCompletion(ForwardRequest Request, object? State, StepOutput? Output, StepException? Error);

/// <summary>Counters of a <see cref="StageHost"/>, swapped as a whole after every change (safe to read from any thread).</summary>
public sealed record StageHostStats(int Sessions, int WaitingSessions, int PendingSteps, long KvTokensUsed, long KvTokenCapacity,
    int KvBlocksUsed, int KvBlocksTotal, long StepsServed, long TokensServed, long Iterations, long Preemptions, int PeakBatch, int LastBatch);

/// <summary>Iteration-level batching settings of a <see cref="StageHost"/>.</summary>
public sealed record BatchingOptions
{
    /// <summary>Positions per KV block (default 16).</summary>
    public int BlockSize { get; init; } = KvBlockPool.DefaultBlockSize;
    /// <summary>Most new positions (decodes + prefill chunks) one iteration runs (default 256).</summary>
    public int MaxBatchTokens { get; init; } = 256;
    /// <summary>Longest prefill chunk (default 128): longer prompts are split so running decodes are not stalled.</summary>
    public int PrefillChunk { get; init; } = 128;
    /// <summary>
    /// Free blocks a new session must leave per running session so those can keep growing (default 1); lower means
    /// more sessions at once but more preemptions when they all grow.
    /// </summary>
    public int AdmissionHeadroomBlocks { get; init; } = 1;
    /// <summary>
    /// When nothing can run for lack of KV blocks while some sessions holding blocks are busy elsewhere (their step is
    /// on another stage, and may free or need blocks when it returns), how long to wait before preempting anyway
    /// (default 2 s). When every such session is here and blocked, preemption is immediate.
    /// </summary>
    public TimeSpan PreemptAfter { get; init; } = TimeSpan.FromSeconds(2);
}

/// <summary>
/// Runs a loaded stage for many sessions with continuous (iteration-level) batching. Steps are
/// <see cref="Submit"/>ted as they arrive; each <see cref="RunIteration"/> takes the ready steps of different
/// sessions — every pending decode plus prefill chunks up to a token budget — through one batched forward
/// (<see cref="StageModel.ForwardBatch"/>) and returns the steps that finished: hidden states for the next hop,
/// or on the last stage the token sampled with the step's own sampling parameters. Sessions join and leave
/// between iterations. KV memory is a paged <see cref="KvBlockPool"/> sized by the budget: a new session is
/// admitted when its prompt's blocks (plus a spare block per running session) are free and otherwise waits in
/// arrival order; when running sessions cannot grow and nothing can run, the youngest is preempted (its step fails
/// with <see cref="ErrorCode.Overloaded"/>; the coordinator replays it). Blocks return when a session closes or expires.
/// Not thread-safe: one compute thread owns it (TorchSharp dispose scopes and inference mode are per thread);
/// <see cref="Stats"/> may be read from anywhere.
/// </summary>
public sealed class StageHost : IDisposable
{
    private sealed class Session(long id, KvSequence kv, LayerRange layers, long now)
    {
        public long Id { get; } = id;
        public KvSequence Kv { get; } = kv;
        public LayerRange Layers { get; } = layers;
        public long LastUsedTicks { get; set; } = now;
        public long AdmittedOrder { get; set; } = -1;
        public bool Admitted => AdmittedOrder >= 0;
        public Queue<Pending> Steps { get; } = new();
    }

    private sealed class Pending(ForwardRequest req, object? state, Tensor input, int t, long started) : IDisposable
    {
        public ForwardRequest Request { get; } = req;
        public object? State { get; } = state;
        public Tensor Input { get; } = input;   // ids [t] or hidden [t, H], detached, owned
        public int T { get; } = t;
        public long Started { get; } = started;
        public int Done { get; set; }
        public bool Prepared { get; set; }
        public List<Tensor> Outputs { get; } = [];
        public int Remaining => T - Done;

        public void Dispose()
        {
            Input.Dispose();
            foreach (var o in Outputs) o.Dispose();
            Outputs.Clear();
        }
    }

    private readonly Dictionary<long, Session> _sessions = new();
    private readonly List<Session> _waiting = [];
    private readonly List<StepCompletion> _ready = [];
    private readonly HashSet<long> _preempted = [];        // recently preempted sessions: their next step is told why
    private readonly Queue<long> _preemptedOrder = new();
    private readonly TimeProvider _time;
    private readonly BatchingOptions _batching;
    private readonly KvBlockPool _pool;
    private long _admissions, _steps, _tokens, _iterations, _preemptions;
    private int _peakBatch, _lastBatch;
    private DateTimeOffset? _blockedSince;
    private StageHostStats _stats = null!;

    public StageModel Model { get; }
    public LayerRange Range => new(Model.Start, Model.End);
    /// <summary>Most tokens (summed over sessions) the KV pool holds.</summary>
    public long KvTokenCapacity => (long)_pool.TotalBlocks * _pool.BlockSize;
    public long KvTokensUsed => _sessions.Values.Sum(s => (long)s.Kv.Length);
    public int KvBlocksUsed => _pool.UsedBlocks;
    public int KvBlocksTotal => _pool.TotalBlocks;
    public int Sessions => _sessions.Count;
    public long StepsServed => _steps;
    public long TokensServed => _tokens;
    /// <summary>A snapshot of the counters, readable from other threads.</summary>
    public StageHostStats Stats => Volatile.Read(ref _stats);

    /// <summary>True when <see cref="RunIteration"/> has something to do (a step to run, admit or report).</summary>
    public bool HasWork => _ready.Count > 0
        || _sessions.Values.Any(s => s.Admitted && s.Steps.Count > 0)
        || (_waiting.Count > 0 && CanAdmit(_waiting[0]));

    public StageHost(StageModel model, long kvBudgetBytes, TimeProvider? time = null, BatchingOptions? batching = null)
    {
        Model = model;
        _time = time ?? TimeProvider.System;
        _batching = batching ?? new BatchingOptions();
        if (_batching.BlockSize < 1 || _batching.MaxBatchTokens < 1 || _batching.PrefillChunk < 1 || _batching.AdmissionHeadroomBlocks < 0)
            throw new ArgumentException("batching: block size, batch tokens and prefill chunk must be ≥ 1, admission headroom ≥ 0");
        long perToken = Math.Max(1, model.KvBytesPerToken);
        // At least one full context fits, so a single session can always reach the model's limit.
        long tokens = Math.Max(model.MaxTokens, kvBudgetBytes / perToken);
        int blocks = (int)Math.Min(int.MaxValue / _batching.BlockSize, (tokens + _batching.BlockSize - 1) / _batching.BlockSize);
        _pool = model.NewBlockPool(blocks, _batching.BlockSize);
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
            var (session, input, t) = Accept(req, now);
            session.Steps.Enqueue(new Pending(req, state, input, t, now));
        }
        catch (StepException e)
        {
            _ready.Add(new StepCompletion(req, state, null, e));
        }
        Publish();
    }

    private (Session, Tensor, int) Accept(ForwardRequest req, long now)
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
        int h = Model.Config.HiddenSize;
        if (input.Shape.Length != (first ? 2 : 3) || input.Shape[0] != 1 || t < 1 || (!first && input.Shape[2] != h))
            throw new StepException(ErrorCode.BadRequest, $"input of shape [{string.Join(",", input.Shape)}] does not fit layers {hop}");
        // The node's one token-id check, on the wire bytes before any tensor work; checked per step, not in the batch:
        // one bad step must not fail the others it would be batched with.
        if (first && input.FirstTokenIdOutside(Model.Config.VocabSize) is { } bad)
            throw new StepException(ErrorCode.BadRequest, $"token id {bad} is outside the vocabulary [0, {Model.Config.VocabSize})");
        if (req.StartPosition < 0 || req.StartPosition + t > Model.MaxTokens)
            throw new StepException(ErrorCode.BadRequest, $"position {req.StartPosition + t} exceeds the model's context of {Model.MaxTokens}");
        if (_pool.BlocksFor(req.StartPosition + t) > _pool.TotalBlocks)
            throw new StepException(ErrorCode.OutOfMemory, $"the step needs {req.StartPosition + t} KV positions; this node's pool holds {KvTokenCapacity}");

        if (_sessions.TryGetValue(req.SessionId, out var s))
        {
            if (!s.Layers.Equals(hop))
                throw new StepException(ErrorCode.BadRequest, $"session {req.SessionId} uses layers {s.Layers} here, not {hop}");
        }
        else if (req.StartPosition != 0 && _preempted.Contains(req.SessionId))
            throw new StepException(ErrorCode.Overloaded, $"session {req.SessionId} was preempted (KV cache full); replay it");
        else if (req.StartPosition != 0)
            throw new StepException(ErrorCode.UnknownSession, $"session {req.SessionId} is unknown here (expired or never opened) and the step starts at position {req.StartPosition}");

        Tensor x;
        using (var scope = NewDisposeScope())
        {
            try { x = input.ToTensor(first ? null : Model.ComputeDtype); }
            catch (InvalidDataException e) { throw new StepException(ErrorCode.BadRequest, e.Message); }
            x = first ? x.reshape(t) : x.reshape(t, h);
            x.DetachFromDisposeScope();
        }
        if (s is null)
        {
            s = new Session(req.SessionId, _pool.NewSequence(), hop, now);
            _sessions[req.SessionId] = s;
            _waiting.Add(s);
        }
        return (s, x, t);
    }

    /// <summary>
    /// Runs one iteration: admits waiting sessions that fit, runs every admitted session's ready step (a decode,
    /// or the next chunk of a prefill, within the token budget) through one batched forward per layer range, and
    /// returns the steps that finished (including ones that failed at submission or were preempted).
    /// </summary>
    public IReadOnlyList<StepCompletion> RunIteration()
    {
        var done = new List<StepCompletion>(_ready);
        _ready.Clear();
        try
        {
            Admit();
            var (range, items, owners, blocked) = Select(done);
            if (items.Count == 0)
            {
                if (blocked) MaybePreempt(done);
                else _blockedSince = null;
                return done;
            }
            _blockedSince = null;
            Run(range, items, owners, done);
            _iterations++;
            _peakBatch = Math.Max(_peakBatch, items.Count);
            _lastBatch = items.Count;
            return done;
        }
        finally { Publish(); }
    }

    /// <summary>
    /// Runs one step alone (submit, then iterate until it finishes). Only when nothing else is pending —
    /// the node uses <see cref="Submit"/>/<see cref="RunIteration"/>; this is for callers with one step at a time.
    /// </summary>
    /// <exception cref="StepException">Bad input, unknown session, KV pool too small.</exception>
    public StepOutput Run(ForwardRequest req)
    {
        if (_ready.Count > 0 || _sessions.Values.Any(s => s.Steps.Count > 0))
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

    private bool CanAdmit(Session s)
    {
        if (s.Steps.Count == 0) return false;
        int need = _pool.BlocksFor(s.Steps.Peek().T);
        int running = _sessions.Count - _waiting.Count;
        // Keep spare blocks per running session so they can grow; an empty pool admits anything that fits.
        return need + running * _batching.AdmissionHeadroomBlocks <= _pool.FreeBlocks;
    }

    private void Admit()
    {
        while (_waiting.Count > 0 && CanAdmit(_waiting[0]))
        {
            var s = _waiting[0];
            _waiting.RemoveAt(0);
            if (!_pool.TryReserve(s.Kv, s.Steps.Peek().T)) throw new InvalidOperationException("KV admission reserved fewer blocks than it checked");
            s.AdmittedOrder = _admissions++;
        }
    }

    private (LayerRange Range, List<BatchItem> Items, List<(Session S, Pending P, int Rows)> Owners, bool Blocked) Select(List<StepCompletion> done)
    {
        var items = new List<BatchItem>();
        var owners = new List<(Session, Pending, int)>();
        bool blocked = false;
        var candidates = _sessions.Values.Where(s => s.Admitted && s.Steps.Count > 0)
            .OrderBy(s => s.Steps.Peek().Remaining > 1)          // decodes first: they are latency-critical and cheap
            .ThenBy(s => s.Steps.Peek().Started)
            .ToList();
        if (candidates.Count == 0) return (default, items, owners, false);
        var range = candidates[0].Layers;
        int budget = _batching.MaxBatchTokens;
        foreach (var s in candidates)
        {
            if (!s.Layers.Equals(range)) continue; // another layer range runs in a later iteration
            var p = s.Steps.Peek();
            if (!p.Prepared)
            {
                if (p.Request.StartPosition > s.Kv.Length)
                {
                    Fail(s, done, new StepException(ErrorCode.UnknownSession, $"session {s.Id} holds {s.Kv.Length} positions; step starts at {p.Request.StartPosition}"));
                    continue;
                }
                // A retried or replayed step overwrites its positions. (A new session's step starts at its length, 0,
                // and keeps the blocks its admission reserved for the whole prompt.)
                if (p.Request.StartPosition < s.Kv.Length) _pool.Truncate(s.Kv, p.Request.StartPosition);
                p.Prepared = true;
            }
            int chunk = Math.Min(Math.Min(p.Remaining, _batching.PrefillChunk), budget);
            if (chunk <= 0) break;
            if (!_pool.TryReserve(s.Kv, s.Kv.Length + chunk)) { blocked = true; continue; }
            bool last = range.End == Model.Config.NumLayers;
            items.Add(new BatchItem(p.Input.narrow(0, p.Done, chunk), s.Kv, WantLogits: last && p.Done + chunk == p.T));
            owners.Add((s, p, chunk));
            budget -= chunk;
        }
        return (range, items, owners, blocked);
    }

    private void Run(LayerRange range, List<BatchItem> items, List<(Session S, Pending P, int Rows)> owners, List<StepCompletion> done)
    {
        bool last = range.End == Model.Config.NumLayers;
        Tensor?[] results;
        try
        {
            results = Model.ForwardBatch(items, _pool, range.Start, range.End);
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException or OutOfMemoryException)
        {
            // The sessions' caches may be half-written: fail and drop them all (the coordinator recovers the jobs).
            foreach (var (s, _, _) in owners) Fail(s, done, new StepException(ErrorCode.Internal, e.Message), drop: true);
            return;
        }
        finally
        {
            foreach (var it in items) it.Input.Dispose(); // narrow views of the pending inputs
        }
        long now = _time.GetTimestamp();
        for (int i = 0; i < owners.Count; i++)
        {
            var (s, p, rows) = owners[i];
            var r = results[i];
            p.Done += rows;
            s.LastUsedTicks = now;
            if (!last && r is not null) p.Outputs.Add(r.DetachFromDisposeScope());
            if (p.Remaining > 0) continue; // more chunks to go (a last stage computed no logits for this one)
            s.Steps.Dequeue();
            _steps++;
            _tokens += p.T;
            double ms = _time.GetElapsedTime(p.Started, now).TotalMilliseconds;
            try
            {
                StepOutput output;
                if (last)
                {
                    long t0 = _time.GetTimestamp();
                    using (r)
                    {
                        int token = Sample(p.Request, r!);
                        output = new StepOutput(null, token, ms, _time.GetElapsedTime(t0).TotalMilliseconds);
                    }
                }
                else
                {
                    using var scope = NewDisposeScope();
                    var hidden = p.Outputs.Count == 1 ? p.Outputs[0] : cat(p.Outputs, 0);
                    output = new StepOutput(WireTensorConversion.FromTensor(hidden.unsqueeze(0), p.Request.WireDType), null, ms);
                }
                done.Add(new StepCompletion(p.Request, p.State, output, null));
            }
            catch (Exception e) when (e is InvalidOperationException or ArgumentException)
            {
                done.Add(new StepCompletion(p.Request, p.State, null, new StepException(ErrorCode.Internal, e.Message)));
            }
            finally { p.Dispose(); }
        }
    }

    private static int Sample(ForwardRequest req, Tensor logits)
    {
        var sampling = req.Sampling;
        var sampler = new Sampler(new SamplingOptions
        {
            Temperature = sampling.Temperature,
            TopK = sampling.TopK,
            TopP = sampling.TopP,
            Seed = unchecked((long)sampling.Seed),
            MaxNewTokens = 1,
        }, req.Step);
        return sampler.Next(logits);
    }

    private void MaybePreempt(List<StepCompletion> done)
    {
        var now = _time.GetUtcNow();
        _blockedSince ??= now;
        bool allHere = _sessions.Values.Where(s => s.Admitted && s.Kv.BlockCount > 0).All(s => s.Steps.Count > 0);
        if (!allHere && now - _blockedSince.Value < _batching.PreemptAfter) return; // a session elsewhere may still free blocks
        _blockedSince = null;
        Preempt(done);
    }

    /// <summary>Nothing could run because running sessions cannot grow: free the youngest session's blocks.</summary>
    private void Preempt(List<StepCompletion> done)
    {
        var victim = _sessions.Values.Where(s => s.Admitted && s.Kv.BlockCount > 0).MaxBy(s => s.AdmittedOrder);
        if (victim is null) return;
        _preemptions++;
        if (_preempted.Add(victim.Id)) _preemptedOrder.Enqueue(victim.Id);
        while (_preemptedOrder.Count > 4096) _preempted.Remove(_preemptedOrder.Dequeue());
        Fail(victim, done, new StepException(ErrorCode.Overloaded,
            $"KV cache full ({_pool.UsedBlocks}/{_pool.TotalBlocks} blocks): session {victim.Id} preempted; replay it"), drop: true);
    }

    /// <summary>Fails the session's head step; with <paramref name="drop"/> fails all its steps and closes it.</summary>
    private void Fail(Session s, List<StepCompletion> done, StepException error, bool drop = false)
    {
        if (s.Steps.TryDequeue(out var p))
        {
            done.Add(new StepCompletion(p.Request, p.State, null, error));
            p.Dispose();
        }
        if (drop) CloseSession(s, done, error);
    }

    private void CloseSession(Session s, List<StepCompletion> sink, StepException reason)
    {
        while (s.Steps.TryDequeue(out var p))
        {
            sink.Add(new StepCompletion(p.Request, p.State, null, reason));
            p.Dispose();
        }
        _pool.Release(s.Kv);
        _sessions.Remove(s.Id);
        _waiting.Remove(s);
    }

    /// <summary>
    /// Frees a session's KV blocks; its queued steps (if any) come back from the next iteration failed with
    /// <see cref="ErrorCode.Cancelled"/> (nobody waits for them). False when it was not here.
    /// </summary>
    public bool Close(long sessionId)
    {
        if (!_sessions.TryGetValue(sessionId, out var s)) return false;
        CloseSession(s, _ready, new StepException(ErrorCode.Cancelled, $"session {sessionId} was closed"));
        Publish();
        return true;
    }

    /// <summary>Frees sessions idle (no queued step) longer than <paramref name="ttl"/>; returns how many.</summary>
    public int ExpireIdle(TimeSpan ttl)
    {
        long now = _time.GetTimestamp();
        var stale = _sessions.Values.Where(s => s.Steps.Count == 0 && _time.GetElapsedTime(s.LastUsedTicks, now) > ttl).Select(s => s.Id).ToList();
        foreach (var id in stale) Close(id);
        return stale.Count;
    }

    /// <summary>Fails every queued step (e.g. before the stage is unloaded) and closes every session.</summary>
    public IReadOnlyList<StepCompletion> Abort(ErrorCode code, string message)
    {
        var done = new List<StepCompletion>(_ready);
        _ready.Clear();
        foreach (var s in _sessions.Values.ToList()) CloseSession(s, done, new StepException(code, message));
        Publish();
        return done;
    }

    private void Publish() => Volatile.Write(ref _stats, new StageHostStats(
        _sessions.Count, _waiting.Count, _ready.Count + _sessions.Values.Sum(s => s.Steps.Count), KvTokensUsed, KvTokenCapacity,
        _pool.UsedBlocks, _pool.TotalBlocks, _steps, _tokens, _iterations, _preemptions, _peakBatch, _lastBatch));

    public void Dispose()
    {
        foreach (var s in _sessions.Values)
            while (s.Steps.TryDequeue(out var p)) p.Dispose();
        _sessions.Clear();
        _waiting.Clear();
        _pool.Dispose();
        Model.Dispose();
    }
}
