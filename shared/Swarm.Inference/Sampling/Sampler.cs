using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Swarm.Sampling;

/// <summary>
/// Picks a job's next token from one row of logits: greedy argmax, or temperature → top-k → top-p
/// (the order HF transformers applies them) followed by one seeded draw.
/// </summary>
/// <remarks>
/// <para><b>Reproducible and relocatable randomness.</b> There is no RNG state to carry: the draw for
/// step <c>k</c> is the uniform number <see cref="Uniform(long, long)"/><c>(seed, k)</c>, a pure
/// function of (seed, k) built from the SplitMix64 finaliser (a counter-based generator). So the same
/// seed gives the same stream in every process on every machine, and a job that moves to another node
/// mid-generation continues exactly by creating <c>new Sampler(options with Seed = sampler.Seed, step: k)</c>.
/// These constants are part of the wire contract; a unit test pins golden values.</para>
/// <para><b>Deterministic arithmetic.</b> libtorch is used only to pick the top-k candidates. Argmax,
/// probabilities (exp in double), the nucleus cut and the draw run in managed code, sequentially, in a
/// fixed order (top-k candidates by descending logit with ties by ascending id; otherwise ascending id),
/// so they depend neither on libtorch's SIMD path nor on its thread count: identical logits give
/// identical tokens (across machines, as far as the platform's <c>Math.Exp</c> agrees). The nucleus is
/// found with a mass-weighted quickselect (O(vocab)), not a full sort, so top-p costs about as much as
/// plain temperature sampling.</para>
/// <para>Not thread-safe: one sampler per job, used by the thread that runs that job's last stage.</para>
/// </remarks>
public sealed class Sampler
{
    private readonly HashSet<int> _stop;

    /// <summary>Creates the sampler for a job whose next draw is step <paramref name="step"/> (0 for a new job).</summary>
    /// <exception cref="ArgumentException">The options are invalid (all problems are listed) or step is negative.</exception>
    public Sampler(SamplingOptions options, long step = 0)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.EnsureValid();
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        Options = options;
        Seed = options.Seed ?? Random.Shared.NextInt64();
        Step = step;
        _stop = [.. options.StopTokenIds];
    }

    public SamplingOptions Options { get; }

    /// <summary>The seed in use: <see cref="SamplingOptions.Seed"/>, or the one chosen when it was null.</summary>
    public long Seed { get; }

    /// <summary>Index of the next draw; <see cref="Next"/> increments it (greedy steps count too).</summary>
    public long Step { get; private set; }

    /// <summary>True when <paramref name="token"/> is one of the job's stop token ids.</summary>
    public bool IsStop(int token) => _stop.Contains(token);

    /// <summary>
    /// Chooses the next token from <paramref name="logits"/>: one row [vocab] (or [1, vocab]) of any
    /// floating dtype on any device. The input is not modified or disposed.
    /// </summary>
    /// <exception cref="ArgumentException">Wrong shape or dtype.</exception>
    /// <exception cref="InvalidOperationException">The logits hold NaN, or every logit is -inf.</exception>
    public int Next(Tensor logits)
    {
        ArgumentNullException.ThrowIfNull(logits);
        int token;
        using (NewDisposeScope())
        using (no_grad())
        {
            var row = Row(logits);
            var values = RowKernels.View(row);
            token = Options.IsGreedy ? RowKernels.Argmax(values) : Sample(row, values, Uniform(Seed, Step));
        }
        Step++;
        return token;
    }

    /// <summary>
    /// The uniform number in [0, 1) used by the draw of step <paramref name="step"/> of the stream
    /// <paramref name="seed"/>: <c>mix(mix(seed ^ K) + (step + 1)·γ)</c> with the SplitMix64 finaliser
    /// <c>mix</c> and golden-ratio increment γ, keeping the top 53 bits.
    /// </summary>
    public static double Uniform(long seed, long step)
    {
        ulong key = Mix((ulong)seed ^ 0x5DEECE66DUL);
        ulong z = Mix(key + ((ulong)step + 1) * 0x9E3779B97F4A7C15UL);
        return (z >> 11) * (1.0 / (1UL << 53));
    }

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    private static Tensor Row(Tensor logits)
    {
        if (!logits.is_floating_point())
            throw new ArgumentException($"logits must be a floating-point tensor, got {logits.dtype}", nameof(logits));
        var row = logits.dim() switch
        {
            1 => logits,
            2 when logits.shape[0] == 1 => logits[0],
            _ => throw new ArgumentException($"logits must be one row [vocab] or [1, vocab], got shape [{string.Join(", ", logits.shape)}]", nameof(logits)),
        };
        if (row.shape[0] == 0) throw new ArgumentException("logits row is empty", nameof(logits));
        return row.to(ScalarType.Float32, CPU).contiguous();
    }

    private static bool HasNaN(ReadOnlySpan<float> values)
    {
        foreach (float x in values) if (float.IsNaN(x)) return true;
        return false;
    }

    /// <summary>
    /// The distribution <see cref="Next"/> draws from for <paramref name="logits"/> (one row, as there): probabilities per
    /// token id after temperature, top-k and top-p, summing to 1 (greedy: 1 at the argmax). Speculative sampling compares
    /// drafts against it (<see cref="SpeculativeAcceptance"/>). Does not advance <see cref="Step"/>.
    /// </summary>
    /// <exception cref="ArgumentException">Wrong shape or dtype.</exception>
    /// <exception cref="InvalidOperationException">The logits hold NaN, or every logit is -inf.</exception>
    public double[] Probabilities(Tensor logits)
    {
        ArgumentNullException.ThrowIfNull(logits);
        using (NewDisposeScope())
        using (no_grad())
        {
            var row = Row(logits);
            var values = RowKernels.View(row);
            var p = new double[values.Length];
            if (Options.IsGreedy) p[RowKernels.Argmax(values)] = 1;
            else if (Options.TopK > 0 && Options.TopK < values.Length)
            {
                var (v, ids) = TopCandidates(row, values);
                var w = Weights(v, out double total);
                int n = Options.TopP < 1 ? SortedNucleus(w, Options.TopP * total) : w.Length;
                for (int i = 0; i < n; i++) p[ids[i]] = w[i];
            }
            else
            {
                var w = Weights(values, out double total);
                if (Options.TopP < 1) Nucleus(w, Options.TopP * total);
                w.CopyTo(p, 0);
            }
            double sum = 0;
            foreach (double x in p) sum += x;
            for (int i = 0; i < p.Length; i++) p[i] /= sum;
            return p;
        }
    }

    /// <summary>Inverse-CDF draw over <paramref name="weights"/> (in index order, need not sum to 1) with the uniform <paramref name="u"/>.</summary>
    internal static int Draw(double[] weights, double u) => Draw(weights, weights.Length, u);

    private int Sample(Tensor row, ReadOnlySpan<float> values, double u)
    {
        if (Options.TopK > 0 && Options.TopK < values.Length)
        {
            var (v, ids) = TopCandidates(row, values);
            var w = Weights(v, out double total);
            int n = Options.TopP < 1 ? SortedNucleus(w, Options.TopP * total) : w.Length;
            return ids[Draw(w, n, u)];
        }
        else
        {
            var w = Weights(values, out double total);
            if (Options.TopP < 1) Nucleus(w, Options.TopP * total);
            return Draw(w, w.Length, u);
        }
    }

    /// <summary>The top-k logits and their ids, by descending logit, ties → lower id first.</summary>
    private (float[] Values, int[] Ids) TopCandidates(Tensor row, ReadOnlySpan<float> values)
    {
        if (HasNaN(values)) throw new InvalidOperationException("logits contain NaN");
        var (topValues, topIds) = row.topk(Options.TopK, dim: 0, largest: true, sorted: true);
        var (v, ids) = (MemoryMarshal.Cast<byte, float>(topValues.contiguous().bytes).ToArray(), Ints(topIds));
        // topk promises no order among equal logits: make it canonical (ties → lower id first).
        var pairs = new (float Value, int Id)[v.Length];
        for (int i = 0; i < pairs.Length; i++) pairs[i] = (v[i], ids[i]);
        Array.Sort(pairs, static (a, b) => b.Value != a.Value ? b.Value.CompareTo(a.Value) : a.Id.CompareTo(b.Id));
        for (int i = 0; i < pairs.Length; i++) (v[i], ids[i]) = pairs[i];
        return (v, ids);
    }

    private static int[] Ints(Tensor ids)
    {
        var span = MemoryMarshal.Cast<byte, long>(ids.to(ScalarType.Int64).contiguous().bytes);
        var result = new int[span.Length];
        for (int i = 0; i < result.Length; i++) result[i] = (int)span[i];
        return result;
    }

    /// <summary>exp((logit − max) / T) per candidate, in double, in a fixed order.</summary>
    private double[] Weights(ReadOnlySpan<float> logits, out double total)
    {
        double max = double.NegativeInfinity;
        foreach (float x in logits)
        {
            if (float.IsNaN(x)) throw new InvalidOperationException("logits contain NaN");
            if (x > max) max = x;
        }
        if (double.IsNegativeInfinity(max)) throw new InvalidOperationException("every logit is -inf: nothing can be sampled");
        if (double.IsPositiveInfinity(max)) throw new InvalidOperationException("logits contain +inf");
        // Divide rather than multiply by 1/T: for a subnormal T, 1/T is +inf and 0·inf would make the best token's weight NaN.
        double t = Options.Temperature;
        var w = new double[logits.Length];
        total = 0;
        for (int i = 0; i < w.Length; i++) total += w[i] = Math.Exp((logits[i] - max) / t);
        return w;
    }

    /// <summary>For weights sorted in descending order: length of the smallest prefix holding <paramref name="need"/>.</summary>
    private static int SortedNucleus(double[] w, double need)
    {
        double cum = 0;
        for (int i = 0; i < w.Length; i++)
        {
            cum += w[i];
            if (cum >= need) return i + 1;
        }
        return w.Length;
    }

    /// <summary>
    /// For weights in id order: zeroes every weight outside the nucleus — the smallest set of largest
    /// weights (ties → lower id first) holding <paramref name="need"/>. Finds the boundary weight by a
    /// mass-weighted quickselect in O(V) instead of sorting the vocabulary. At least one weight is always kept,
    /// even when <paramref name="need"/> underflowed to 0 (a top-p far below float range).
    /// </summary>
    internal static void Nucleus(double[] w, double need)
    {
        var a = w.Where(x => x > 0).ToArray();
        int lo = 0, hi = a.Length;
        double remaining = need, boundary = 0;
        while (lo < hi)
        {
            double pivot = MedianOfThree(a[lo], a[lo + (hi - lo) / 2], a[hi - 1]);
            // Three-way partition of a[lo..hi): [> pivot | == pivot | < pivot].
            int gt = lo, i = lo, lt = hi;
            double massAbove = 0, massEqual = 0;
            while (i < lt)
            {
                double x = a[i];
                if (x > pivot) { massAbove += x; (a[gt], a[i]) = (a[i], a[gt]); gt++; i++; }
                else if (x < pivot) { lt--; (a[lt], a[i]) = (a[i], a[lt]); }
                else { massEqual += x; i++; }
            }
            if (gt > lo && massAbove >= remaining) { hi = gt; continue; } // boundary among the larger ones (a mass of 0 keeps the largest)
            boundary = pivot;
            if (massAbove + massEqual >= remaining) break;            // boundary is the pivot value
            remaining -= massAbove + massEqual;                       // need some of the smaller ones too
            lo = lt;
            if (lo >= hi) { boundary = 0; break; }                    // rounding: take everything
        }
        // Keep every weight above the boundary, then tied weights in id order until the mass is reached.
        double kept = 0;
        foreach (double x in w) if (x > boundary) kept += x;
        for (int i = 0; i < w.Length; i++)
        {
            if (w[i] > boundary) continue;
            if (w[i] == boundary && boundary > 0 && (kept < need || kept == 0)) { kept += w[i]; continue; }
            w[i] = 0;
        }
    }

    private static double MedianOfThree(double a, double b, double c) =>
        Math.Max(Math.Min(a, b), Math.Min(Math.Max(a, b), c));

    /// <summary>Inverse-CDF draw over the first <paramref name="n"/> weights; returns the position drawn.</summary>
    private static int Draw(double[] w, int n, double u)
    {
        double total = 0;
        for (int i = 0; i < n; i++) total += w[i];
        double target = u * total, acc = 0;
        int last = 0;
        for (int i = 0; i < n; i++)
        {
            if (w[i] == 0) continue;
            acc += w[i];
            last = i;
            if (acc > target) return i;
        }
        return last; // rounding left the target at the very top
    }
}
