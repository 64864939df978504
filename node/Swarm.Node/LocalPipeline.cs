using System.Diagnostics;
using Swarm.Checkpoints;
using Swarm.Model;
using Swarm.Protocol;
using Swarm.Sampling;

namespace Swarm.Node;

/// <summary>Wall-clock figures of one generation.</summary>
public sealed record GenerationTimings(double PrefillMs, double DecodeMs, double TimeToFirstTokenMs, double DecodeTokensPerSecond);

/// <summary>What a generation produced: the new token ids, why it stopped ("length" or "stop"), and timings.</summary>
public sealed record GenerationResult(IReadOnlyList<int> TokenIds, string FinishReason, int PromptTokens, GenerationTimings Timings);

/// <summary>
/// Generates in one process, no network: <c>swarm run</c>'s engine and the tests' single-process baseline. Each stage
/// (the whole model, or any split of it) is a <see cref="StageHost"/> — the scheduler and executor a node runs — and a
/// token takes the path it takes through a swarm: every step is a <see cref="ForwardRequest"/> submitted to the first
/// host, its hidden states handed to the next, and the last host samples the token with the step's sampling parameters
/// (the node's one sampling place). The job's step loop is the coordinator's in miniature: prompt, then one token per
/// step, stop on a stop token id or the token budget. The prompt runs as one prefill (no chunking: one job is alone here).
/// Not thread-safe: one generation at a time, on the thread that created the pipeline (TorchSharp scopes are per thread).
/// </summary>
public sealed class LocalPipeline : IDisposable
{
    private readonly StageHost[] _hosts;
    private readonly Hop[] _route;
    private long _nextSession;

    /// <param name="stages">Loaded stages covering layers [0, L) in order.</param>
    /// <param name="leaveOpen">True: the caller keeps the stages and disposes them; default false: the pipeline does.</param>
    /// <exception cref="ArgumentException">The stages do not run from the first layer to the last without gaps.</exception>
    public LocalPipeline(IReadOnlyList<StageModel> stages, bool leaveOpen = false)
    {
        if (stages.Count == 0 || !stages[0].IsFirst || !stages[^1].IsLast)
            throw new ArgumentException("stages must run from the first layer to the last");
        for (int i = 1; i < stages.Count; i++)
            if (stages[i].Start != stages[i - 1].End)
                throw new ArgumentException($"stage {i} starts at layer {stages[i].Start}, expected {stages[i - 1].End}");
        _route = [.. stages.Select((s, i) => new Hop { NodeId = i + 1, Endpoint = "local", Layers = new LayerRange(s.Start, s.End) })];
        _hosts = new StageHost[stages.Count];
        try
        {
            for (int i = 0; i < stages.Count; i++)
                _hosts[i] = new StageHost(stages[i], kvBudgetBytes: 0, batching: WholePrompts(stages[i]), fingerprints: false, leaveModelOpen: leaveOpen);
        }
        catch
        {
            foreach (var h in _hosts) h?.Dispose();
            throw;
        }
    }

    /// <summary>Loads layers [0, L) of <paramref name="checkpoint"/> as one stage (the pipeline owns it).</summary>
    public static LocalPipeline Load(Checkpoint checkpoint, WeightFormat weights = WeightFormat.F32,
        IProgress<(long Done, long Total)>? progress = null, TensorParallelOptions? tensorParallel = null) =>
        new([StageModel.Load(checkpoint, 0, checkpoint.Config.NumLayers, weights, progress, tensorParallel: tensorParallel)]);

    /// <summary>The model's configuration.</summary>
    public ModelConfig Config => _hosts[0].Model.Config;

    /// <summary>
    /// The stage hosts, first to last (their <see cref="StageHost.Stats"/> show what ran). Each holds at least one full
    /// context of KV blocks, so a generation never waits for memory.
    /// </summary>
    public IReadOnlyList<StageHost> Hosts => _hosts;

    // One prompt in one forward, as before there was a scheduler: the KV pool holds one full context, and a job alone
    // has no decodes for a prefill chunk to stall.
    private static BatchingOptions WholePrompts(StageModel stage) => new() { PrefillChunk = stage.MaxTokens, MaxBatchTokens = stage.MaxTokens };

    /// <summary>Generates up to <see cref="SamplingOptions.MaxNewTokens"/> tokens after <paramref name="prompt"/>.</summary>
    /// <param name="onToken">Called with each new token as soon as it is sampled (streaming).</param>
    /// <exception cref="ArgumentException">Invalid options, an empty prompt or one that fills the context, a token id outside the vocabulary.</exception>
    public GenerationResult Generate(IReadOnlyList<int> prompt, SamplingOptions options, Action<int>? onToken = null,
        CancellationToken cancellationToken = default)
    {
        options.EnsureValid();
        if (prompt.Count == 0) throw new ArgumentException("the prompt is empty");
        int limit = _hosts[0].Model.MaxTokens;
        if (prompt.Count >= limit)
            throw new ArgumentException($"the prompt has {prompt.Count} tokens; the model's context is {limit}");
        int maxNew = Math.Min(options.MaxNewTokens, limit - prompt.Count);
        var sampling = new SamplingParams
        {
            Temperature = options.Temperature, TopK = options.TopK, TopP = options.TopP,
            Seed = unchecked((ulong)(options.Seed ?? Random.Shared.NextInt64())),
        };
        var stop = options.StopTokenIds.ToHashSet();
        long session = ++_nextSession;
        var tokens = new List<int>(maxNew);
        string finish = "length";
        var total = Stopwatch.StartNew();
        double prefillMs = 0;
        try
        {
            var input = WireTensor.FromTokenIds([.. prompt.Select(t => (long)t)]);
            for (int step = 0; step < maxNew; step++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int position = step == 0 ? 0 : prompt.Count + step - 1;
                int next = RunStep(new ForwardRequest
                {
                    JobId = session, SessionId = session, Step = step, Kind = step == 0 ? StepKind.Prefill : StepKind.Decode,
                    StartPosition = position, Input = input, Route = _route, Sampling = sampling,
                });
                if (step == 0) prefillMs = total.Elapsed.TotalMilliseconds;
                tokens.Add(next);
                onToken?.Invoke(next);
                if (stop.Contains(next)) { finish = "stop"; break; }
                input = WireTensor.FromTokenIds([next]);
            }
        }
        finally
        {
            foreach (var h in _hosts) Close(h, session);
        }
        double totalMs = total.Elapsed.TotalMilliseconds, decodeMs = totalMs - prefillMs;
        int decoded = tokens.Count - 1;
        return new GenerationResult(tokens, finish, prompt.Count,
            new GenerationTimings(prefillMs, decodeMs, prefillMs, decoded > 0 ? decoded / (decodeMs / 1000) : 0));
    }

    /// <summary>One step through every host, each running it as a node would; returns the last host's sampled token.</summary>
    private int RunStep(ForwardRequest request)
    {
        for (int i = 0; ; i++)
        {
            var output = RunAlone(_hosts[i], request);
            if (i == _hosts.Length - 1)
                return output.Token ?? throw new InvalidOperationException("the last stage returned no token");
            request = request with { Route = _route[(i + 1)..], Input = output.Hidden! };
        }
    }

    private static StepOutput RunAlone(StageHost host, ForwardRequest request)
    {
        host.Submit(request);
        while (true)
        {
            var done = host.RunIteration();
            if (done.Count > 0)
            {
                var c = done[0];
                if (c.Error is { } e)
                    throw e.Code == ErrorCode.BadRequest ? new ArgumentException(e.Message) : new InvalidOperationException(e.Message);
                return c.Output!;
            }
            if (!host.HasWork) throw new InvalidOperationException("the stage dropped a step without reporting it");
        }
    }

    /// <summary>Frees the session's KV blocks on a host, and anything a failed step left queued there.</summary>
    private static void Close(StageHost host, long session)
    {
        host.Close(session);
        while (host.HasWork) host.RunIteration();
    }

    /// <summary>Disposes the hosts (and, unless left open, the stages).</summary>
    public void Dispose()
    {
        foreach (var h in _hosts) h.Dispose();
    }
}
