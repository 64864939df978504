using System.Diagnostics;
using Swarm.Model;
using Swarm.Sampling;
using static TorchSharp.torch;

namespace Swarm.Engine;

/// <summary>Wall-clock figures of one generation.</summary>
public sealed record GenerationTimings(double PrefillMs, double DecodeMs, double TimeToFirstTokenMs, double DecodeTokensPerSecond);

/// <summary>What a generation produced: the new token ids, why it stopped, and timings.</summary>
public sealed record GenerationResult(IReadOnlyList<int> TokenIds, string FinishReason, int PromptTokens, GenerationTimings Timings);

/// <summary>
/// Generates in one process through a chain of in-memory stages (the whole model, or any split of it):
/// prefill the prompt, then one token per step through every stage's KV pool; the last stage's logits
/// are sampled. This is <c>swarm run</c>'s engine and the reference the swarm is compared with; it runs the
/// batched forward a node runs (<see cref="StageModel.ForwardBatch"/>), with a batch of one.
/// </summary>
public sealed class LocalGenerator
{
    private readonly IReadOnlyList<StageModel> _stages;

    public LocalGenerator(IReadOnlyList<StageModel> stages)
    {
        if (stages.Count == 0 || !stages[0].IsFirst || !stages[^1].IsLast)
            throw new ArgumentException("stages must run from the first layer to the last");
        for (int i = 1; i < stages.Count; i++)
            if (stages[i].Start != stages[i - 1].End)
                throw new ArgumentException($"stage {i} starts at layer {stages[i].Start}, expected {stages[i - 1].End}");
        _stages = stages;
    }

    public ModelConfig Config => _stages[0].Config;

    /// <param name="onToken">Called with each new token as soon as it is sampled (streaming).</param>
    public GenerationResult Generate(IReadOnlyList<int> prompt, SamplingOptions options, Action<int>? onToken = null,
        CancellationToken cancellationToken = default)
    {
        options.EnsureValid();
        if (prompt.Count == 0) throw new ArgumentException("the prompt is empty");
        int limit = _stages[0].MaxTokens;
        if (prompt.Count >= limit)
            throw new ArgumentException($"the prompt has {prompt.Count} tokens; the model's context is {limit}");
        foreach (int id in prompt)
            if (id < 0 || id >= Config.VocabSize)
                throw new ArgumentException($"token id {id} is outside the vocabulary [0, {Config.VocabSize})");

        int maxNew = Math.Min(options.MaxNewTokens, limit - prompt.Count);
        var sampler = new Sampler(options);
        // Each stage gets a KV pool holding exactly this session, reserved up front: its positions are then one
        // contiguous range, which attention reads as a view.
        int capacity = Math.Min(limit, prompt.Count + maxNew);
        var pools = new List<KvBlockPool>(_stages.Count);
        var tokens = new List<int>(maxNew);
        string finish = "length";
        var total = Stopwatch.StartNew();
        double prefillMs = 0;
        try
        {
            var sequences = new KvSequence[_stages.Count];
            for (int i = 0; i < _stages.Count; i++)
            {
                var pool = _stages[i].NewBlockPool(Math.Max(1, (capacity + KvBlockPool.DefaultBlockSize - 1) / KvBlockPool.DefaultBlockSize));
                pools.Add(pool);
                sequences[i] = pool.NewSequence();
                if (!pool.TryReserve(sequences[i], capacity)) throw new InvalidOperationException("a new KV pool could not hold its session");
            }
            long[] input = prompt.Select(t => (long)t).ToArray();
            for (int step = 0; step < maxNew; step++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int next;
                using (var scope = NewDisposeScope())
                {
                    Tensor x = tensor(input, ScalarType.Int64);
                    for (int i = 0; i < _stages.Count; i++)
                        x = _stages[i].ForwardBatch([new BatchItem(x, sequences[i])], pools[i], _stages[i].Start, _stages[i].End)[0]!;
                    next = sampler.Next(x);
                }
                if (step == 0) prefillMs = total.Elapsed.TotalMilliseconds;
                tokens.Add(next);
                onToken?.Invoke(next);
                if (sampler.IsStop(next)) { finish = "stop"; break; }
                input = [next];
            }
        }
        finally
        {
            foreach (var p in pools) p.Dispose();
        }
        double totalMs = total.Elapsed.TotalMilliseconds, decodeMs = totalMs - prefillMs;
        int decoded = tokens.Count - 1;
        return new GenerationResult(tokens, finish, prompt.Count,
            new GenerationTimings(prefillMs, decodeMs, prefillMs, decoded > 0 ? decoded / (decodeMs / 1000) : 0));
    }
}
