using Swarm.Checkpoints;
using Swarm.Model;
using Swarm.Protocol;
using Swarm.Sampling;
using static TorchSharp.torch;

namespace Swarm.Node.Drafting;

/// <summary>
/// The draft model a last-stage node runs for draft-model speculation (<c>--draft-model</c>): the whole small model as
/// one stage over its own paged KV pool, one draft session per target session. After the target accepted a step's
/// tokens, <see cref="Propose"/> extends the session's draft cache with them and drafts the next
/// <see cref="ForwardRequest.DraftCount"/> tokens autoregressively — greedy: the draft's argmax; sampling: draws from the
/// draft's distribution q (temperature, top-k and top-p as the target's) with <see cref="SpeculativeAcceptance.DraftToken"/>,
/// keyed by the token's index like every other draw — so the drafts go back with the accepted tokens and drafting costs
/// no round trip. <see cref="DistributionsFor"/> gives the next step's acceptance test the q of each drafted token: the
/// ones kept from drafting when the step verifies them, else recomputed from the token ids (a replacement node after a
/// failure, or a session the node has not drafted for), so a replayed step decides as the original did.
/// </summary>
/// <remarks>
/// The cache follows the token ids, not the step's positions: a step names its known tokens as the session's tokens
/// before its <see cref="ForwardRequest.StartPosition"/> plus its <see cref="ForwardRequest.DraftContext"/>, and the
/// draft cache keeps the longest prefix it already holds of whatever it must run (its own drafted tokens, once
/// accepted, included) and truncates the rest — the rollback on rejection. A session that cannot name its known tokens
/// (it started here mid-job, as a spot check's shadow) drafts nothing. When the pool is full the least recently used
/// sessions are evicted; a session that still does not fit drafts nothing that step. Runs on the stage's compute thread.
/// </remarks>
public sealed class DraftModelRunner : IDisposable
{
    private sealed class DraftSession(long sessionId, KvSequence kv)
    {
        public long SessionId { get; } = sessionId;
        public KvSequence Kv { get; } = kv;
        /// <summary>The tokens whose keys and values the cache holds, position by position.</summary>
        public List<int> Fed { get; } = [];
        /// <summary>The job's tokens as of its last step (prompt and every produced token).</summary>
        public List<int> Known { get; } = [];
        /// <summary>Drafted after <see cref="Known"/>, and their distributions (sampling; null when greedy).</summary>
        public int[] Pending { get; set; } = [];
        public double[][]? PendingQ { get; set; }
        public long LastUsed { get; set; }
    }

    private readonly KvBlockPool _pool;
    private readonly Dictionary<long, DraftSession> _sessions = [];
    private readonly TimeProvider _time;

    /// <summary>The draft model (layers [0, L), owned).</summary>
    public StageModel Model { get; }

    /// <summary>What the node announces (<see cref="Hello.DraftModel"/>, see <see cref="DraftModelIdentity"/>).</summary>
    public string Identity { get; }

    /// <summary>Draft sessions held.</summary>
    public int Sessions => _sessions.Count;

    /// <param name="model">The whole draft model (first and last layer); the runner owns and disposes it.</param>
    /// <param name="identity">Its <see cref="DraftModelIdentity"/>.</param>
    /// <param name="kvTokens">Tokens the draft KV pool holds, summed over sessions (at least one full context).</param>
    /// <param name="time">Clock of idle expiry (default the system clock).</param>
    public DraftModelRunner(StageModel model, string identity, long kvTokens, TimeProvider? time = null)
    {
        if (!model.IsFirst || !model.IsLast) throw new ArgumentException("a draft model runs all its layers in one stage", nameof(model));
        Model = model;
        Identity = identity;
        _time = time ?? TimeProvider.System;
        long tokens = Math.Max(model.MaxTokens, kvTokens);
        _pool = model.NewBlockPool((int)Math.Min(int.MaxValue / KvBlockPool.DefaultBlockSize, (tokens + KvBlockPool.DefaultBlockSize - 1) / KvBlockPool.DefaultBlockSize));
    }

    /// <summary>Loads the checkpoint folder <paramref name="dir"/> whole as a draft model.</summary>
    public static DraftModelRunner Load(string dir, WeightFormat weights, long kvTokens)
    {
        string identity = DraftModelIdentity.Of(dir);
        using var ckpt = Checkpoint.Open(dir);
        return new DraftModelRunner(StageModel.Load(ckpt, 0, ckpt.Config.NumLayers, weights), identity, kvTokens);
    }

    /// <summary>
    /// The draft's distribution for each of <paramref name="req"/>'s drafted tokens (sampling); null for greedy steps,
    /// steps without a draft, and when the step's known tokens cannot be named (the acceptance test then treats the
    /// drafts as point masses, which is exact for any draft).
    /// </summary>
    public IReadOnlyList<double[]>? DistributionsFor(ForwardRequest req)
    {
        var options = LastStageSampling.OptionsOf(req.Sampling);
        if (req.Draft.Length == 0 || options.IsGreedy || req.DraftContext.Length == 0) return null;
        if (Context(req) is not { } found) return null;
        var (s, known) = found;
        if (s.PendingQ is { } kept && s.Known.SequenceEqual(known) && s.Pending.Length >= req.Draft.Length
            && s.Pending.AsSpan(0, req.Draft.Length).SequenceEqual(req.Draft))
            return kept[..req.Draft.Length];
        using var scope = NewDisposeScope();
        if (!InVocabulary(req.Draft) || known.Count + req.Draft.Length - 1 > Model.MaxTokens) return null;
        var rows = Logits(s, [.. known, .. req.Draft[..^1]], known.Count - 1);
        if (rows is null) return null;
        var sampler = new Sampler(options);
        return [.. Enumerable.Range(0, req.Draft.Length).Select(i => { using var row = rows[i]; return sampler.Probabilities(row); })];
    }

    /// <summary>
    /// Records the tokens <paramref name="req"/> produced (<paramref name="produced"/>: its accepted drafts and the target's
    /// next) and drafts up to <see cref="ForwardRequest.DraftCount"/> tokens to follow them; empty when the step asks for
    /// none or its known tokens cannot be named. The draft distributions a later step uses must be those the drafts were
    /// drawn from: a step that carries a <see cref="ForwardRequest.DraftContext"/> must carry drafts of this model only.
    /// </summary>
    public int[] Propose(ForwardRequest req, IReadOnlyList<int> produced)
    {
        if (req.DraftContext.Length == 0 || Context(req) is not { } found) return [];
        var (s, known) = found;
        known.AddRange(produced);
        s.Known.Clear();
        s.Known.AddRange(known);
        s.Pending = [];
        s.PendingQ = null;
        int k = Math.Min(req.DraftCount, Model.MaxTokens - known.Count);
        if (k <= 0 || !InVocabulary(produced)) return [];
        var options = LastStageSampling.OptionsOf(req.Sampling);
        var sampler = new Sampler(options);
        long index = req.Step + produced.Count;   // the index of the next step's first token: the one d_1 proposes
        var drafted = new List<int>(k);
        var qs = options.IsGreedy ? null : new List<double[]>(k);
        var sequence = new List<int>(known);
        for (int i = 0; i < k; i++)
        {
            using var scope = NewDisposeScope();
            var rows = Logits(s, sequence, sequence.Count - 1);
            if (rows is null) break;
            using var row = rows[0];
            int d;
            if (qs is null) d = sampler.Next(row);
            else
            {
                var q = sampler.Probabilities(row);
                d = SpeculativeAcceptance.DraftToken(q, sampler.Seed, index + i);
                qs.Add(q);
            }
            drafted.Add(d);
            sequence.Add(d);
        }
        s.Pending = [.. drafted];
        s.PendingQ = qs?.ToArray();
        return s.Pending;
    }

    /// <summary>Frees a session's draft cache (false when there was none).</summary>
    public bool Close(long sessionId)
    {
        if (!_sessions.Remove(sessionId, out var s)) return false;
        _pool.Release(s.Kv);
        return true;
    }

    /// <summary>Frees every session's draft cache.</summary>
    public void CloseAll()
    {
        foreach (var id in _sessions.Keys.ToArray()) Close(id);
    }

    /// <summary>
    /// The step's session and its known tokens (the session's tokens before the step's start position, then its draft
    /// context); null when the session does not know the tokens before the start (or their ids are outside the vocabulary).
    /// </summary>
    private (DraftSession Session, List<int> Known)? Context(ForwardRequest req)
    {
        if (!InVocabulary(req.DraftContext)) return null;
        if (!_sessions.TryGetValue(req.SessionId, out var s))
        {
            if (req.StartPosition != 0) return null;
            _sessions[req.SessionId] = s = new DraftSession(req.SessionId, _pool.NewSequence());
        }
        s.LastUsed = _time.GetTimestamp();
        if (s.Known.Count < req.StartPosition) return null;
        return (s, [.. s.Known.Take(req.StartPosition), .. req.DraftContext]);
    }

    private bool InVocabulary(IEnumerable<int> ids) => ids.All(t => t >= 0 && t < Model.Config.VocabSize);

    /// <summary>
    /// The draft's f32 logits [sequence.Count − from, V] at positions from … end of <paramref name="sequence"/> (a tensor of
    /// the caller's dispose scope): the cache keeps its longest prefix of the sequence (at most <paramref name="from"/>
    /// positions), the rest runs in one forward pass. Null when the pool cannot hold the sequence.
    /// </summary>
    private Tensor? Logits(DraftSession s, IReadOnlyList<int> sequence, int from)
    {
        int keep = 0, limit = Math.Min(from, s.Fed.Count);
        while (keep < limit && s.Fed[keep] == sequence[keep]) keep++;
        _pool.Truncate(s.Kv, keep);
        s.Fed.RemoveRange(keep, s.Fed.Count - keep);
        if (sequence.Count > Model.MaxTokens || !Reserve(s, sequence.Count)) return null;
        long[] ids = [.. sequence.Skip(keep).Select(t => (long)t)];
        using var input = tensor(ids, ScalarType.Int64);
        Tensor logits;
        try { logits = Model.ForwardBatch([new BatchItem(input, s.Kv, WantLogits: true, AllPositions: true)], _pool, 0, Model.End)[0]!; }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException)
        {
            // Drafting only ever costs speed: a draft that fails drops its session (its cache may be half-written), not the step.
            _sessions.Remove(s.SessionId);
            _pool.Release(s.Kv);
            return null;
        }
        s.Fed.AddRange(sequence.Skip(keep));
        var all = logits.reshape(-1, logits.shape[^1]);
        return all.narrow(0, from - keep, sequence.Count - from);
    }

    /// <summary>Reserves blocks for <paramref name="length"/> positions, evicting the least recently used other sessions when needed.</summary>
    private bool Reserve(DraftSession s, int length)
    {
        while (!_pool.TryReserve(s.Kv, length))
        {
            var victim = _sessions.Where(kv => !ReferenceEquals(kv.Value, s)).OrderBy(kv => kv.Value.LastUsed).Select(kv => (long?)kv.Key).FirstOrDefault();
            if (victim is null) return false;
            Close(victim.Value);
        }
        return true;
    }

    /// <summary>Frees sessions not used for longer than <paramref name="ttl"/>; returns how many.</summary>
    public int ExpireIdle(TimeSpan ttl)
    {
        var idle = _sessions.Where(kv => _time.GetElapsedTime(kv.Value.LastUsed) > ttl).Select(kv => kv.Key).ToArray();
        foreach (var id in idle) Close(id);
        return idle.Length;
    }

    /// <summary>Frees the caches, the pool and the model.</summary>
    public void Dispose()
    {
        CloseAll();
        _pool.Dispose();
        Model.Dispose();
    }
}
