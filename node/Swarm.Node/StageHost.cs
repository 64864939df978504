using System.Diagnostics;
using Swarm.Model;
using Swarm.Node.Telemetry;
using Swarm.Protocol;
using Swarm.Sampling;
using static TorchSharp.torch;

namespace Swarm.Node;

/// <summary>What one step produced on this node: hidden states for the next hop, or the sampled token.</summary>
public sealed record StepOutput(WireTensor? Hidden, int? Token, double Milliseconds);

/// <summary>A step could not run; the code and message go back to the coordinator in a <see cref="StepFailed"/>.</summary>
public sealed class StepException(ErrorCode code, string message) : Exception(message)
{
    public ErrorCode Code { get; } = code;
}

/// <summary>
/// Runs a loaded stage for many sessions, each with its own KV cache. Not thread-safe: one compute
/// thread owns it (TorchSharp dispose scopes and inference mode are per thread). KV memory is accounted
/// against a token budget so the node refuses work it cannot hold instead of running out of memory.
/// </summary>
public sealed class StageHost : IDisposable
{
    private sealed class Session(KvCache cache, LayerRange layers, long lastUsed)
    {
        public KvCache Cache { get; } = cache;
        public LayerRange Layers { get; } = layers;
        public long LastUsedTicks { get; set; } = lastUsed;
    }

    private readonly Dictionary<long, Session> _sessions = new();
    private readonly TimeProvider _time;

    public StageModel Model { get; }
    public LayerRange Range => new(Model.Start, Model.End);
    /// <summary>Most tokens (summed over sessions) this stage's KV budget holds.</summary>
    public long KvTokenCapacity { get; }
    public long KvTokensUsed => _sessions.Values.Sum(s => (long)s.Cache.Length);
    public int Sessions => _sessions.Count;
    public long StepsServed { get; private set; }
    public long TokensServed { get; private set; }

    public StageHost(StageModel model, long kvBudgetBytes, TimeProvider? time = null)
    {
        Model = model;
        _time = time ?? TimeProvider.System;
        long perToken = Math.Max(1, model.KvBytesPerToken);
        KvTokenCapacity = Math.Max(model.MaxTokens, kvBudgetBytes / perToken);
    }

    /// <summary>Runs this node's hop (route[0]) of a step.</summary>
    /// <exception cref="StepException">Bad input, unknown session, KV budget exhausted.</exception>
    public StepOutput Run(ForwardRequest req)
    {
        var sw = Stopwatch.StartNew();
        if (req.Route.Length == 0) throw new StepException(ErrorCode.BadRequest, "empty route");
        var hop = req.Route[0].Layers;
        if (hop.Start < Model.Start || hop.End > Model.End || hop.Start >= hop.End)
            throw new StepException(ErrorCode.RangeNotLoaded, $"this node holds layers {Range}, not {hop}");
        bool first = hop.Start == 0, last = hop.End == Model.Config.NumLayers;
        var input = req.Input;
        if (first != (input.DType == WireDType.I64))
            throw new StepException(ErrorCode.BadRequest, first ? "the first stage takes token ids (I64)" : "a middle stage takes hidden states, not token ids");
        int t = (int)(input.Shape.Length >= 2 ? input.Shape[1] : 0);
        if (input.Shape.Length != (first ? 2 : 3) || input.Shape[0] != 1 || t < 1
            || (!first && input.Shape[2] != Model.Config.HiddenSize))
            throw new StepException(ErrorCode.BadRequest, $"input of shape [{string.Join(",", input.Shape)}] does not fit layers {hop}");

        var session = GetSession(req, hop, t);
        using var scope = NewDisposeScope();
        Tensor x;
        try { x = input.ToTensor(first ? null : Model.ComputeDtype); }
        catch (InvalidDataException e) { throw new StepException(ErrorCode.BadRequest, e.Message); }
        Tensor y;
        try { y = Model.Forward(x, session.Cache, hop.Start, hop.End); }
        catch (ArgumentOutOfRangeException e) { throw new StepException(ErrorCode.BadRequest, e.Message); } // token id outside the vocabulary
        session.LastUsedTicks = _time.GetTimestamp();
        StepsServed++;
        TokensServed += t;
        if (!last) return new StepOutput(WireTensor.FromTensor(y, req.WireDType), null, sw.Elapsed.TotalMilliseconds);
        var sampling = req.Sampling;
        using var span = NodeInstrumentation.Source.StartActivity(NodeInstrumentation.SampleSpan);
        span?.SetTag("swarm.sampling.greedy", sampling.Temperature <= 0);
        var sampler = new Sampler(new SamplingOptions
        {
            Temperature = sampling.Temperature,
            TopK = sampling.TopK,
            TopP = sampling.TopP,
            Seed = unchecked((long)sampling.Seed),
            MaxNewTokens = 1,
        }, req.Step);
        int token = sampler.Next(y[0]);
        span?.SetTag("swarm.token.position", req.StartPosition + t);
        return new StepOutput(null, token, sw.Elapsed.TotalMilliseconds);
    }

    private Session GetSession(ForwardRequest req, LayerRange hop, int t)
    {
        if (_sessions.TryGetValue(req.SessionId, out var s))
        {
            if (!s.Layers.Equals(hop))
                throw new StepException(ErrorCode.BadRequest, $"session {req.SessionId} uses layers {s.Layers} here, not {hop}");
            if (req.StartPosition > s.Cache.Length)
                throw new StepException(ErrorCode.UnknownSession, $"session {req.SessionId} holds {s.Cache.Length} positions; step starts at {req.StartPosition}");
            s.Cache.Truncate(req.StartPosition); // a retried or replayed step overwrites its positions
        }
        else
        {
            if (req.StartPosition != 0)
                throw new StepException(ErrorCode.UnknownSession, $"session {req.SessionId} is unknown here (expired or never opened) and the step starts at position {req.StartPosition}");
            s = new Session(Model.NewCache(1, Math.Min(Model.MaxTokens, Math.Max(64, t + 32))), hop, _time.GetTimestamp());
            _sessions[req.SessionId] = s;
        }
        if (req.StartPosition + t > Model.MaxTokens)
            throw new StepException(ErrorCode.BadRequest, $"position {req.StartPosition + t} exceeds the model's context of {Model.MaxTokens}");
        if (KvTokensUsed - s.Cache.Length + req.StartPosition + t > KvTokenCapacity)
            throw new StepException(ErrorCode.Overloaded, $"KV cache budget exhausted ({KvTokensUsed}/{KvTokenCapacity} tokens in use)");
        return s;
    }

    /// <summary>Frees a session's cache; false when it was not here.</summary>
    public bool Close(long sessionId)
    {
        if (!_sessions.Remove(sessionId, out var s)) return false;
        s.Cache.Dispose();
        return true;
    }

    /// <summary>Frees sessions idle longer than <paramref name="ttl"/>; returns how many.</summary>
    public int ExpireIdle(TimeSpan ttl)
    {
        long now = _time.GetTimestamp();
        var stale = _sessions.Where(kv => _time.GetElapsedTime(kv.Value.LastUsedTicks, now) > ttl).Select(kv => kv.Key).ToList();
        foreach (var id in stale) Close(id);
        return stale.Count;
    }

    public void Dispose()
    {
        foreach (var s in _sessions.Values) s.Cache.Dispose();
        _sessions.Clear();
        Model.Dispose();
    }
}
