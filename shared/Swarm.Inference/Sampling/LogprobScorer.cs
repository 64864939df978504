using Swarm.Protocol;
using static TorchSharp.torch;

namespace Swarm.Sampling;

/// <summary>
/// Log-probabilities of chosen tokens from raw logits: the log-softmax of each row (in f32, before any temperature,
/// top-k or top-p — what the model says, not what the sampler drew from), the chosen token's value and the
/// <c>top</c> most likely tokens (most likely first; among equal values the lower id first, as libtorch's topk
/// returns them).
/// </summary>
public static class LogprobScorer
{
    /// <summary>Scores each row of <paramref name="logits"/> ([n, V] or [V] for one row) at <paramref name="chosen"/>[row].</summary>
    /// <param name="logits">Raw logits; not modified, not disposed.</param>
    /// <param name="chosen">One token id per row, each in [0, V).</param>
    /// <param name="top">How many of the most likely tokens to report per row (0 … V).</param>
    /// <exception cref="ArgumentException">The number of chosen ids differs from the rows, an id is outside the vocabulary, or top is out of range.</exception>
    public static TokenLogprobs[] Score(Tensor logits, IReadOnlyList<int> chosen, int top)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(chosen);
        using var scope = NewDisposeScope();
        var rows = logits.dim() == 1 ? logits.unsqueeze(0) : logits;
        long n = rows.shape[0], vocab = rows.shape[1];
        if (chosen.Count != n) throw new ArgumentException($"{chosen.Count} chosen tokens for {n} rows", nameof(chosen));
        if (top < 0 || top > vocab) throw new ArgumentOutOfRangeException(nameof(top), $"top {top} is not in [0, {vocab}]");
        var ids = new long[n];
        for (int i = 0; i < n; i++)
        {
            if (chosen[i] < 0 || chosen[i] >= vocab) throw new ArgumentException($"token id {chosen[i]} is outside the vocabulary [0, {vocab})", nameof(chosen));
            ids[i] = chosen[i];
        }
        var logp = rows.to_type(ScalarType.Float32).log_softmax(-1);
        var picked = logp.gather(1, tensor(ids, ScalarType.Int64).to(logp.device).unsqueeze(1)).squeeze(1).cpu().data<float>().ToArray();
        float[] topValues = [];
        long[] topIds = [];
        if (top > 0)
        {
            var (values, indices) = logp.topk(top, dim: -1, largest: true, sorted: true);
            topValues = values.cpu().data<float>().ToArray();
            topIds = indices.cpu().data<long>().ToArray();
        }
        var result = new TokenLogprobs[n];
        for (int i = 0; i < n; i++)
        {
            result[i] = new TokenLogprobs
            {
                Logprob = picked[i],
                TopIds = Array.ConvertAll(topIds[(i * top)..((i + 1) * top)], v => (int)v),
                TopLogprobs = topValues[(i * top)..((i + 1) * top)],
            };
        }
        return result;
    }
}
