using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Swarm.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Swarm.Sampling;

/// <summary>
/// Managed kernels over rows of f32 values on the CPU — a last stage's logits, a stage's hidden states — read where they
/// lie, without copies to managed arrays or a libtorch call per row: the first largest entry (greedy sampling), the top
/// two (a fingerprint's runner-up and margin), and the product of many rows with one small fixed matrix (a fingerprint's
/// projection). A last stage's fingerprints of 64 rows of pythia-160m's logits, one profiled run: 9.2 ms a step through
/// the libtorch calls these replace (stack, matmul, two max reductions), 2.4 ms through these.
/// </summary>
public static unsafe class RowKernels
{
    /// <summary>Rows of the projection one pass keeps in L2 while every input row goes past them (4096 × 16 f32 = 256 KiB).</summary>
    private const int ProjectBlock = 4096;

    /// <summary>The index of the first largest value (ties → lowest index; all −∞ → 0).</summary>
    /// <exception cref="ArgumentException">Empty.</exception>
    /// <exception cref="InvalidOperationException">A value is NaN.</exception>
    public static int Argmax(ReadOnlySpan<float> values)
    {
        if (values.IsEmpty) throw new ArgumentException("no values", nameof(values));
        fixed (float* p = values)
        {
            float max = Max(p, 0, values.Length, out bool nan);
            if (nan) throw new InvalidOperationException("logits contain NaN");
            return FirstIndexOf(p, values.Length, max, skip: -1);
        }
    }

    /// <summary>
    /// The first largest value's index, the first index of the largest among the others (the runner-up) and the margin
    /// between their values. A row holding NaN gives (0, 0, NaN): sampling rejects such a row.
    /// </summary>
    /// <exception cref="ArgumentException">Fewer than two values.</exception>
    public static (int Best, int RunnerUp, float Margin) TopTwo(ReadOnlySpan<float> values)
    {
        if (values.Length < 2) throw new ArgumentException("the top two need at least two values", nameof(values));
        fixed (float* p = values)
        {
            int n = values.Length;
            float max = Max(p, 0, n, out bool nan);
            if (nan) return (0, 0, float.NaN);
            int best = FirstIndexOf(p, n, max, skip: -1);
            // The largest of the others: the ranges on both sides of the best, as whole vectors where they allow.
            float second = Math.Max(Max(p, 0, best, out _), Max(p, best + 1, n, out _));
            return (best, FirstIndexOf(p, n, second, skip: best), max - second);
        }
    }

    /// <summary><see cref="TopTwo(ReadOnlySpan{float})"/> of one row [n] (or [1, n]) of any float dtype on any device.</summary>
    public static (int Best, int RunnerUp, float Margin) TopTwo(Tensor row)
    {
        using var scope = NewDisposeScope();
        return TopTwo(View(F32(row)));
    }

    /// <summary><see cref="TopTwo(ReadOnlySpan{float})"/> of several rows ([n] each, any float dtype), the rows shared among the cores.</summary>
    public static (int Best, int RunnerUp, float Margin)[] TopTwo(IReadOnlyList<Tensor> rows)
    {
        using var scope = NewDisposeScope();
        var views = rows.Select(F32).ToArray();
        var pointers = views.Select(LinearWeights.DataPointerOf).ToArray();
        var lengths = views.Select(v => checked((int)v.numel())).ToArray();
        // Checked here, not in the parts: a part must not throw on a pool thread.
        if (lengths.Any(n => n < 2)) throw new ArgumentException("the top two need at least two values in every row", nameof(rows));
        var result = new (int, int, float)[rows.Count];
        int parts = rows.Count >= 8 ? ComputePool.Shared.Workers + 1 : 1;
        void Part(int part)
        {
            for (int r = part; r < result.Length; r += parts) result[r] = TopTwo(new ReadOnlySpan<float>((void*)pointers[r], lengths[r]));
        }
        if (parts == 1) Part(0);
        else ComputePool.Shared.Run(parts, Part);
        GC.KeepAlive(views);
        return result;
    }

    /// <summary>The values of an f32 CPU contiguous tensor where they lie; valid while the tensor lives.</summary>
    internal static ReadOnlySpan<float> View(Tensor t)
    {
        if (t.dtype != ScalarType.Float32 || t.device_type != DeviceType.CPU || !t.is_contiguous())
            throw new ArgumentException("a view needs a contiguous f32 CPU tensor", nameof(t));
        return new ReadOnlySpan<float>((void*)LinearWeights.DataPointerOf(t), checked((int)t.numel()));
    }

    /// <summary>The tensor itself when it is f32, contiguous and on the CPU; else such a copy (in the caller's dispose scope).</summary>
    private static Tensor F32(Tensor t) =>
        t.dtype == ScalarType.Float32 && t.device_type == DeviceType.CPU && t.is_contiguous() ? t : t.to(ScalarType.Float32, CPU).contiguous();

    /// <summary><see cref="Project(IReadOnlyList{Tensor}, Tensor)"/> of every row of a matrix [t, dim] (or one row [dim]).</summary>
    public static float[] Project(Tensor matrix, Tensor projection)
    {
        int dim = CheckProjection(projection);
        using var scope = NewDisposeScope();
        var m = F32(matrix);
        if (m.numel() % dim != 0) throw new ArgumentException($"{m.numel()} values are not rows of {dim}", nameof(matrix));
        int rows = (int)(m.numel() / dim);
        nint at = LinearWeights.DataPointerOf(m);
        var pointers = new nint[rows];
        for (int r = 0; r < rows; r++) pointers[r] = at + r * (nint)dim * sizeof(float);
        return Project(pointers, m, projection);
    }

    /// <summary>
    /// y[r] = rows[r] · <paramref name="projection"/> for every row: each row [dim] of any float dtype on any device (made
    /// f32 on the CPU when it is not), <paramref name="projection"/> [dim, width] f32 on the CPU, width a multiple of 8.
    /// Returns the rows' products one after another (rows × width). Sums in f32, in an order of its own (results agree
    /// with a libtorch matmul to f32 rounding).
    /// </summary>
    public static float[] Project(IReadOnlyList<Tensor> rows, Tensor projection)
    {
        int dim = CheckProjection(projection);
        using var scope = NewDisposeScope();
        var pointers = new nint[rows.Count];
        for (int r = 0; r < rows.Count; r++)
        {
            if (rows[r].numel() != dim) throw new ArgumentException($"row {r} has {rows[r].numel()} values, the projection takes {dim}", nameof(rows));
            pointers[r] = LinearWeights.DataPointerOf(F32(rows[r]));
        }
        return Project(pointers, rows, projection);
    }

    /// <summary>The projection's number of rows, after checking it is a contiguous f32 CPU matrix of a width the kernel takes.</summary>
    private static int CheckProjection(Tensor projection)
    {
        if (projection.dim() != 2 || projection.dtype != ScalarType.Float32 || projection.device_type != DeviceType.CPU || !projection.is_contiguous())
            throw new ArgumentException("the projection must be a contiguous f32 CPU matrix [dim, width]", nameof(projection));
        if (projection.shape[1] % 8 != 0) throw new ArgumentException($"the projection's width {projection.shape[1]} is not a multiple of 8", nameof(projection));
        return checked((int)projection.shape[0]);
    }

    /// <summary>The products of the rows at <paramref name="pointers"/> (kept alive by <paramref name="owner"/>) with the projection.</summary>
    private static float[] Project(nint[] pointers, object owner, Tensor projection)
    {
        int dim = (int)projection.shape[0], width = (int)projection.shape[1];
        var y = new float[pointers.Length * width];
        fixed (float* py = y) Project(pointers, dim, (float*)LinearWeights.DataPointerOf(projection), width, py);
        GC.KeepAlive(owner);
        return y;
    }

    /// <summary>
    /// The kernel: blocks of the projection that stay in L2, and within a block four rows at a time against each
    /// 8-column strip, so each line of the projection read from L2 feeds four rows' FMAs rather than one.
    /// </summary>
    private static void Project(nint[] rows, int dim, float* p, int width, float* y)
    {
        // Groups of four rows dealt out to the cores in turn (from eight rows on: below that one core is quicker).
        int groups = (rows.Length + 3) / 4, parts = rows.Length >= 8 ? Math.Min(groups, ComputePool.Shared.Workers + 1) : 1;
        if (parts == 1) ProjectGroups(rows, dim, p, width, y, 0, 1);
        else ComputePool.Shared.Run(parts, part => ProjectGroups(rows, dim, p, width, y, part, parts));
    }

    private static void ProjectGroups(nint[] rows, int dim, float* p, int width, float* y, int first, int step)
    {
        for (int v0 = 0; v0 < dim; v0 += ProjectBlock)
        {
            int v1 = Math.Min(dim, v0 + ProjectBlock);
            for (int r = 4 * first; r < rows.Length; r += 4 * step)
            {
                int n = Math.Min(4, rows.Length - r);
                // Missing rows of the last group read row r again; their sums are dropped.
                float* x0 = (float*)rows[r], x1 = (float*)rows[r + (n > 1 ? 1 : 0)], x2 = (float*)rows[r + (n > 2 ? 2 : 0)], x3 = (float*)rows[r + (n > 3 ? 3 : 0)];
                for (int c = 0; c < width; c += 8)
                {
                    var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
                    float* pv = p + (long)v0 * width + c;
                    for (int v = v0; v < v1; v++, pv += width)
                    {
                        var column = Vector256.Load(pv);
                        a0 = Vector256.MultiplyAddEstimate(Vector256.Create(x0[v]), column, a0);
                        a1 = Vector256.MultiplyAddEstimate(Vector256.Create(x1[v]), column, a1);
                        a2 = Vector256.MultiplyAddEstimate(Vector256.Create(x2[v]), column, a2);
                        a3 = Vector256.MultiplyAddEstimate(Vector256.Create(x3[v]), column, a3);
                    }
                    Accumulate(a0, y + (long)r * width + c, v0 == 0);
                    if (n > 1) Accumulate(a1, y + (long)(r + 1) * width + c, v0 == 0);
                    if (n > 2) Accumulate(a2, y + (long)(r + 2) * width + c, v0 == 0);
                    if (n > 3) Accumulate(a3, y + (long)(r + 3) * width + c, v0 == 0);
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Accumulate(Vector256<float> sum, float* y, bool first) => (first ? sum : Vector256.Load(y) + sum).Store(y);

    /// <summary>The largest of p[from, to) (−∞ when empty); <paramref name="nan"/> when one of them is NaN.</summary>
    private static float Max(float* p, int from, int to, out bool nan)
    {
        var max = Vector256.Create(float.NegativeInfinity);
        var ordered = Vector256<int>.AllBitsSet; // lanes that have seen only numbers
        int i = from;
        for (; i + 8 <= to; i += 8)
        {
            var v = Vector256.Load(p + i);
            max = Vector256.MaxNative(max, v);
            ordered &= Vector256.Equals(v, v).AsInt32();
        }
        float m = float.NegativeInfinity;
        nan = ordered != Vector256<int>.AllBitsSet;
        for (int j = 0; j < 8; j++) m = Math.Max(m, max.GetElement(j));
        for (; i < to; i++)
        {
            nan |= float.IsNaN(p[i]);
            m = Math.Max(m, p[i]);
        }
        return m;
    }

    /// <summary>The first index of <paramref name="value"/> in p[0, n) other than <paramref name="skip"/> (present by construction).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int FirstIndexOf(float* p, int n, float value, int skip)
    {
        var target = Vector256.Create(value);
        int i = 0;
        for (; i + 8 <= n; i += 8)
        {
            uint hits = Vector256.Equals(Vector256.Load(p + i), target).ExtractMostSignificantBits();
            if (skip >= i && skip < i + 8) hits &= ~(1u << (skip - i));
            if (hits != 0) return i + System.Numerics.BitOperations.TrailingZeroCount(hits);
        }
        for (; i < n; i++)
            if (p[i] == value && i != skip) return i;
        throw new InvalidOperationException("the value sought is not among the row's");
    }
}
