using System.Collections.Concurrent;
using Swarm.Protocol;
using Swarm.Sampling;
using static TorchSharp.torch;

namespace Swarm.Node.Verification;

/// <summary>
/// Computes <see cref="StageFingerprint"/>s: every row (position) of a hidden-state or logit matrix multiplied, in f32
/// (<see cref="RowKernels.Project(Tensor, Tensor)"/>),
/// by one fixed random projection [dim, <see cref="StageFingerprint.Width"/>] — the same on every node, because its
/// entries come from a counter-based generator (SplitMix64, Box–Muller) seeded with <see cref="Seed"/>, not from
/// libtorch's RNG. A random projection keeps distances (Johnson–Lindenstrauss): two replicas whose outputs differ by
/// rounding (f32 vs bf16) give fingerprints a few percent apart, a corrupted position gives one far apart. The
/// projections are built once per width and kept for the process's life.
/// </summary>
internal static class ActivationFingerprint
{
    /// <summary>Seed of the projection; changing it makes nodes of different versions disagree.</summary>
    public const ulong Seed = 0x5EED_F1A9_E2B1_7A0DUL;

    private static readonly ConcurrentDictionary<long, Tensor> Projections = new();

    /// <summary>The projection of every row of <paramref name="rows"/> ([t, dim], any float dtype), row-major, t × Width floats.</summary>
    public static float[] Project(Tensor rows) => RowKernels.Project(rows, Projection(rows.shape[^1]));

    /// <summary>The projections of several rows ([dim] each, any float dtype) one after another, rows × Width floats.</summary>
    public static float[] Project(IReadOnlyList<Tensor> rows) => rows.Count == 0 ? [] : RowKernels.Project(rows, Projection(rows[0].shape[^1]));

    /// <summary>The fixed projection matrix for rows of <paramref name="dim"/> values.</summary>
    private static Tensor Projection(long dim) => Projections.GetOrAdd(dim, d =>
    {
        int width = StageFingerprint.Width;
        var values = new float[d * width];
        ulong state = Seed ^ (ulong)d;
        double scale = 1 / Math.Sqrt(d);
        for (int i = 0; i < values.Length; i += 2)
        {
            // Box–Muller on two uniforms in (0, 1].
            double u1 = (NextUInt64(ref state) >> 11 | 1) * (1.0 / (1UL << 53));
            double u2 = (NextUInt64(ref state) >> 11) * (1.0 / (1UL << 53));
            double r = Math.Sqrt(-2 * Math.Log(u1)) * scale;
            values[i] = (float)(r * Math.Cos(2 * Math.PI * u2));
            if (i + 1 < values.Length) values[i + 1] = (float)(r * Math.Sin(2 * Math.PI * u2));
        }
        return tensor(values, [d, width]).DetachFromDisposeScope();
    });

    private static ulong NextUInt64(ref ulong state)
    {
        ulong z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
