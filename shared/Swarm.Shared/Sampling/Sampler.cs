using System.Runtime.InteropServices;
using TorchSharp;
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
/// <para><b>Deterministic arithmetic.</b> Only the selection of candidates runs in libtorch
/// (argmax / topk / stable sort). Probabilities, the nucleus cut and the draw are computed in managed
/// code with doubles in a fixed order (candidates by descending logit, ties by ascending id), so they
/// do not depend on libtorch's SIMD path or thread count: identical logits give identical tokens.</para>
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
            token = Options.IsGreedy ? Greedy(row) : Sample(row, Uniform(Seed, Step));
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

    private static int Greedy(Tensor row)
    {
        if (isnan(row).any().item<bool>()) throw new InvalidOperationException("logits contain NaN");
        // torch.argmax returns the first maximal index, so ties go to the lowest token id.
        return (int)row.argmax().item<long>();
    }

    private int Sample(Tensor row, double u)
    {
        int vocab = (int)row.shape[0];
        if (Options.TopK > 0 && Options.TopK < vocab)
        {
            var (values, ids) = row.topk(Options.TopK, dim: 0, largest: true, sorted: true);
            var (v, order) = (Floats(values), Ints(ids));
            // topk promises no order among equal logits: make it canonical (ties → lower id first).
            var pairs = new (float Value, int Id)[v.Length];
            for (int i = 0; i < pairs.Length; i++) pairs[i] = (v[i], order[i]);
            Array.Sort(pairs, static (a, b) => b.Value != a.Value ? b.Value.CompareTo(a.Value) : a.Id.CompareTo(b.Id));
            for (int i = 0; i < pairs.Length; i++) (v[i], order[i]) = pairs[i];
            return Draw(v, order, u);
        }
        if (Options.TopP < 1)
        {
            // A stable descending sort already puts equal logits in ascending id order.
            var (values, ids) = row.sort(dim: 0, descending: true, stable: true);
            return Draw(Floats(values), Ints(ids), u);
        }
        // Plain temperature sampling needs no order: candidates in id order.
        return Draw(Floats(row), null, u);
    }

    private static int[] Ints(Tensor ids)
    {
        var span = MemoryMarshal.Cast<byte, long>(ids.to(ScalarType.Int64).contiguous().bytes);
        var result = new int[span.Length];
        for (int i = 0; i < result.Length; i++) result[i] = (int)span[i];
        return result;
    }

    private static float[] Floats(Tensor t) => MemoryMarshal.Cast<byte, float>(t.contiguous().bytes).ToArray();

    /// <summary>Softmax with temperature over <paramref name="logits"/>, nucleus cut (when ids are sorted by
    /// descending logit), then inverse-CDF draw with <paramref name="u"/>.</summary>
    private int Draw(float[] logits, int[]? ids, double u)
    {
        double max = double.NegativeInfinity;
        foreach (float x in logits)
        {
            if (float.IsNaN(x)) throw new InvalidOperationException("logits contain NaN");
            if (x > max) max = x;
        }
        if (double.IsNegativeInfinity(max)) throw new InvalidOperationException("every logit is -inf: nothing can be sampled");
        if (double.IsPositiveInfinity(max)) throw new InvalidOperationException("logits contain +inf");

        double invT = 1.0 / Options.Temperature;
        var w = new double[logits.Length];
        double total = 0;
        for (int i = 0; i < w.Length; i++) total += w[i] = Math.Exp((logits[i] - max) * invT);

        int n = w.Length;
        if (ids is not null && Options.TopP < 1)
        {
            double need = Options.TopP * total, cum = 0;
            for (int i = 0; i < w.Length; i++)
            {
                cum += w[i];
                if (cum >= need) { n = i + 1; break; }
            }
            total = 0;
            for (int i = 0; i < n; i++) total += w[i];
        }

        double target = u * total, acc = 0;
        int last = 0;
        for (int i = 0; i < n; i++)
        {
            if (w[i] == 0) continue;
            acc += w[i];
            last = i;
            if (acc > target) return ids is null ? i : ids[i];
        }
        return ids is null ? last : ids[last]; // rounding left target at the very top
    }
}
