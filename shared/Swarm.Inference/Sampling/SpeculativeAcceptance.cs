using Swarm.Protocol;
using static TorchSharp.torch;

namespace Swarm.Sampling;

/// <summary>
/// Decides which drafted tokens a speculative step keeps, given the target model's logits at the step's last
/// <c>draft.Count + 1</c> positions (row i follows the known tokens and the first i drafted ones), and adds the target's
/// own next token: the accepted tokens are a prefix of the draft followed by one token of the target.
/// </summary>
/// <remarks>
/// <para><b>Greedy</b>: a drafted token is kept while it equals the argmax of its row; the first row that disagrees (or
/// the row after the whole draft) gives the target's token. The result is exactly what plain greedy decoding produces.</para>
/// <para><b>Sampling</b> (standard speculative sampling, Leviathan et al. / Chen et al. 2023): with the target's
/// distribution p (temperature, top-k, top-p as <see cref="Sampler.Probabilities"/>) and the draft's q, drafted token d is
/// kept with probability min(1, p(d)/q(d)); when it is not, the token is drawn from the normalised residual max(0, p − q).
/// A draft without a distribution (prompt lookup) is a point mass: q(d) = 1, so d is kept with probability p(d) and the
/// residual is p without d. Either way every token is distributed exactly as p — the draft changes speed, not output
/// statistics. After a fully accepted draft the extra token is drawn from p.</para>
/// <para><b>Randomness</b> is counter-based, keyed by the token's index (the step's <see cref="ForwardRequest.Step"/> + i):
/// the acceptance test uses <see cref="AcceptanceUniform"/>, the draw <see cref="Sampler.Uniform"/>. A step replayed on
/// another route with the same draft therefore decides the same.</para>
/// </remarks>
public static class SpeculativeAcceptance
{
    /// <summary>
    /// The tokens a step keeps: target logits [draft.Count + 1, V] (any floating dtype), the drafted tokens, the job's
    /// sampling options, the index of the step's first token, and optionally the draft's distributions (one per drafted
    /// token, each over the vocabulary; null: point masses). Inputs are not modified or disposed.
    /// </summary>
    /// <exception cref="ArgumentException">The logits do not have draft.Count + 1 rows, or the draft distributions do not match the draft.</exception>
    public static int[] Accept(Tensor logits, IReadOnlyList<int> draft, SamplingOptions options, long step, IReadOnlyList<double[]>? draftProbabilities = null)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(draft);
        if (logits.dim() != 2 || logits.shape[0] != draft.Count + 1)
            throw new ArgumentException($"logits must be [{draft.Count + 1}, vocab] for {draft.Count} drafted tokens, got [{string.Join(", ", logits.shape)}]", nameof(logits));
        if (draftProbabilities is not null && draftProbabilities.Count != draft.Count)
            throw new ArgumentException($"{draftProbabilities.Count} draft distributions for {draft.Count} drafted tokens", nameof(draftProbabilities));
        var sampler = new Sampler(options, step);
        var accepted = new List<int>(draft.Count + 1);
        for (int i = 0; i <= draft.Count; i++)
        {
            using var row = logits[i];
            if (options.IsGreedy)
            {
                int best = sampler.Next(row);   // the argmax, as plain greedy decoding picks it
                accepted.Add(best);
                if (i == draft.Count || draft[i] != best) break;
                continue;
            }
            var p = sampler.Probabilities(row);
            long index = step + i;
            long seed = sampler.Seed;
            if (i == draft.Count)
            {
                accepted.Add(Sampler.Draw(p, Sampler.Uniform(seed, index)));
                break;
            }
            int d = draft[i];
            if ((uint)d >= (uint)p.Length) throw new ArgumentException($"drafted token {d} is outside the vocabulary [0, {p.Length})", nameof(draft));
            double q = draftProbabilities?[i][d] ?? 1.0;
            if (q > 0 && AcceptanceUniform(seed, index) < Math.Min(1.0, p[d] / q))
            {
                accepted.Add(d);
                continue;
            }
            accepted.Add(Sampler.Draw(Residual(p, draftProbabilities?[i], d), Sampler.Uniform(seed, index)));
            break;
        }
        return [.. accepted];
    }

    /// <summary>
    /// The uniform number of the acceptance test of token <paramref name="index"/> in the stream <paramref name="seed"/>:
    /// <see cref="Sampler.Uniform"/> of the bitwise complement of the seed, so it is independent of the token draws.
    /// </summary>
    public static double AcceptanceUniform(long seed, long index) => Sampler.Uniform(~seed, index);

    /// <summary>
    /// The uniform number a draft model draws its proposal for token <paramref name="index"/> with: <see cref="Sampler.Uniform"/>
    /// of the seed XOR a constant, a stream independent of both the acceptance test's and the target's draws (the proof of
    /// speculative sampling needs the drafted token independent of the test that judges it).
    /// </summary>
    public static double DraftUniform(long seed, long index) => Sampler.Uniform(seed ^ DraftStream, index);

    /// <summary>A drafted token: the draw from the draft's distribution <paramref name="q"/> (as <see cref="Sampler.Probabilities"/> gives it) for token <paramref name="index"/>.</summary>
    public static int DraftToken(double[] q, long seed, long index) => Sampler.Draw(q, DraftUniform(seed, index));

    private const long DraftStream = 0x5851F42D4C957F2D;

    /// <summary>max(0, p − q) (unnormalised); for a point mass at <paramref name="drafted"/>, p without it.</summary>
    private static double[] Residual(double[] p, double[]? q, int drafted)
    {
        var r = (double[])p.Clone();
        if (q is null) r[drafted] = 0;
        else for (int i = 0; i < r.Length; i++) r[i] = Math.Max(0, p[i] - q[i]);
        double sum = 0;
        foreach (double x in r) sum += x;
        // p ≤ q everywhere only when p = q, where every draft is accepted; rounding may still get here: fall back to p.
        return sum > 0 ? r : p;
    }
}
