using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Swarm.Model;

/// <summary>
/// The element-wise and per-head pieces of a GPT-NeoX decode step on f32 rows in plain memory: LayerNorm, exact GELU,
/// NeoX rotary, attention of one query over a sequence's cached keys and values, and the f32/bf16 conversions of the KV
/// store. Same arithmetic as the libtorch path (<see cref="NeoXLayerShard"/>), in f32 throughout.
/// </summary>
internal static unsafe class DecodeKernels
{
    /// <summary>y = (x − mean) / √(var + eps) · w + b over one row of <paramref name="n"/> (biased variance, as torch).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void LayerNorm(float* x, int n, float* w, float* b, float eps, float* y)
    {
        float mean = Sum(x, n) / n;
        var m = Vector256.Create(mean);
        var acc = Vector256<float>.Zero;
        int i = 0;
        for (; i + 8 <= n; i += 8)
        {
            var d = Vector256.Load(x + i) - m;
            acc += d * d;
        }
        float var_ = Vector256.Sum(acc);
        for (; i < n; i++) var_ += (x[i] - mean) * (x[i] - mean);
        float rstd = 1f / MathF.Sqrt(var_ / n + eps);
        var r = Vector256.Create(rstd);
        for (i = 0; i + 8 <= n; i += 8)
            Vector256.Store((Vector256.Load(x + i) - m) * r * Vector256.Load(w + i) + Vector256.Load(b + i), y + i);
        for (; i < n; i++) y[i] = (x[i] - mean) * rstd * w[i] + b[i];
    }

    /// <summary>x ← x · Φ(x) = ½x(1 + erf(x/√2)) (the exact GELU of GPT-NeoX) over <paramref name="n"/> values.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void GeluInPlace(float* x, int n)
    {
        int i = 0;
        var half = Vector256.Create(0.5f);
        var one = Vector256.Create(1f);
        var invSqrt2 = Vector256.Create(0.70710678118654752f);
        for (; i + 8 <= n; i += 8)
        {
            var v = Vector256.Load(x + i);
            Vector256.Store(half * v * (one + Erf(v * invSqrt2)), x + i);
        }
        for (; i < n; i++) x[i] = 0.5f * x[i] * (1f + Erf(x[i] * 0.70710678118654752f));
    }

    // Abramowitz & Stegun 7.1.26: |error| ≤ 1.5e-7, about the spacing of f32 values near 1.
    private const float P = 0.3275911f, A1 = 0.254829592f, A2 = -0.284496736f, A3 = 1.421413741f, A4 = -1.453152027f, A5 = 1.061405429f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Erf(Vector256<float> x)
    {
        var a = Vector256.Abs(x);
        var t = Vector256<float>.One / (Vector256<float>.One + Vector256.Create(P) * a);
        var poly = ((((Vector256.Create(A5) * t + Vector256.Create(A4)) * t + Vector256.Create(A3)) * t + Vector256.Create(A2)) * t
            + Vector256.Create(A1)) * t;
        var y = Vector256<float>.One - poly * Vector256.Exp(-(a * a));
        return Vector256.ConditionalSelect(Vector256.LessThan(x, Vector256<float>.Zero), -y, y);
    }

    private static float Erf(float x)
    {
        float a = MathF.Abs(x), t = 1f / (1f + P * a);
        float y = 1f - ((((A5 * t + A4) * t + A3) * t + A2) * t + A1) * t * MathF.Exp(-a * a);
        return x < 0 ? -y : y;
    }

    /// <summary>
    /// NeoX rotary on one row's query or key of one head, in place: over the first 2·<paramref name="half"/> dims,
    /// x1' = x1·cos − x2·sin, x2' = x2·cos + x1·sin, with cos/sin of the row's position (<paramref name="half"/> each).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Rotate(float* v, float* cos, float* sin, int half)
    {
        for (int i = 0; i < half; i++)
        {
            float x1 = v[i], x2 = v[i + half];
            v[i] = x1 * cos[i] - x2 * sin[i];
            v[i + half] = x2 * cos[i] + x1 * sin[i];
        }
    }

    /// <summary>
    /// softmax(q·Kᵀ·scale)·V of one head's query over <paramref name="length"/> cached positions. Position p's key and value
    /// are <paramref name="hd"/> values at element offset slots[p]·<paramref name="rowStride"/> of the stores (f32 or bf16).
    /// <paramref name="scores"/>: scratch of <paramref name="length"/> floats.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Attend<TStore>(float* q, int hd, void* keys, void* values, long* slots, int length, long rowStride,
        float scale, float* scores, float* output) where TStore : struct, IKvStore
    {
        float max = Scores<TStore>(q, hd, keys, slots, length, rowStride, scale, scores);
        float inv = 1f / ExpInPlace(scores, length, max);
        // Σ_p s_p·v_p, 32 dims at a time summed in registers over all positions (not read and written back per position).
        int d = 0;
        for (; d + 32 <= hd; d += 32)
        {
            var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            for (int p = 0; p < length; p++)
            {
                var s = Vector256.Create(scores[p]);
                long at = slots[p] * rowStride + d;
                a0 = Vector256.FusedMultiplyAdd(s, TStore.Load8(values, at), a0);
                a1 = Vector256.FusedMultiplyAdd(s, TStore.Load8(values, at + 8), a1);
                a2 = Vector256.FusedMultiplyAdd(s, TStore.Load8(values, at + 16), a2);
                a3 = Vector256.FusedMultiplyAdd(s, TStore.Load8(values, at + 24), a3);
            }
            var vi = Vector256.Create(inv);
            Vector256.Store(a0 * vi, output + d); Vector256.Store(a1 * vi, output + d + 8);
            Vector256.Store(a2 * vi, output + d + 16); Vector256.Store(a3 * vi, output + d + 24);
        }
        if (d == hd) return;
        new Span<float>(output + d, hd - d).Clear();
        for (int p = 0; p < length; p++) TStore.AddScaled(output + d, values, slots[p] * rowStride + d, hd - d, scores[p] * inv);
    }

    /// <summary>
    /// <see cref="Attend{TStore}"/> for <paramref name="heads"/> consecutive heads of one sequence at once, position by
    /// position: each position's keys and values of all the heads lie together in one row of the store, so it is read
    /// as one contiguous stretch rather than once per head at a whole row's stride. Head j's query is at
    /// q + j·<paramref name="qStride"/>, its output at output + j·hd, its keys and values j·hd into each row;
    /// <paramref name="scores"/>: scratch of heads × length floats. Every score, weight and output is formed by the same
    /// operations in the same order as <see cref="Attend{TStore}"/> forms it, so the results are the same bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void AttendHeads<TStore>(float* q, long qStride, int heads, int hd, void* keys, void* values, long* slots, int length,
        long rowStride, float scale, float* scores, float* output) where TStore : struct, IKvStore
    {
        float* max = stackalloc float[heads];
        for (int j = 0; j < heads; j++) max[j] = float.NegativeInfinity;
        for (int p = 0; p < length; p++)
        {
            long row = slots[p] * rowStride;
            int j = 0;
            if ((hd & 7) == 0)
                for (; j + 4 <= heads; j += 4)
                {
                    float* q0 = q + j * qStride, q1 = q0 + qStride, q2 = q1 + qStride, q3 = q2 + qStride;
                    long k0 = row + (long)j * hd, k1 = k0 + hd, k2 = k1 + hd, k3 = k2 + hd;
                    var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
                    for (int i = 0; i < hd; i += 8)
                    {
                        a0 = Vector256.FusedMultiplyAdd(Vector256.Load(q0 + i), TStore.Load8(keys, k0 + i), a0);
                        a1 = Vector256.FusedMultiplyAdd(Vector256.Load(q1 + i), TStore.Load8(keys, k1 + i), a1);
                        a2 = Vector256.FusedMultiplyAdd(Vector256.Load(q2 + i), TStore.Load8(keys, k2 + i), a2);
                        a3 = Vector256.FusedMultiplyAdd(Vector256.Load(q3 + i), TStore.Load8(keys, k3 + i), a3);
                    }
                    Score(scores, length, max, j, p, Vector256.Sum(a0) * scale);
                    Score(scores, length, max, j + 1, p, Vector256.Sum(a1) * scale);
                    Score(scores, length, max, j + 2, p, Vector256.Sum(a2) * scale);
                    Score(scores, length, max, j + 3, p, Vector256.Sum(a3) * scale);
                }
            for (; j < heads; j++) Score(scores, length, max, j, p, TStore.Dot(q + j * qStride, keys, row + (long)j * hd, hd) * scale);
        }
        float* inv = stackalloc float[heads];
        for (int j = 0; j < heads; j++) inv[j] = 1f / ExpInPlace(scores + (long)j * length, length, max[j]);
        // Σ_p s_p·v_p per head, accumulated in the output in position order; the 32-dim blocks are scaled at the end, the
        // rest (head dims not a multiple of 32) takes weights already scaled, as Attend does.
        int blocks = hd & ~31;
        new Span<float>(output, heads * hd).Clear();
        for (int p = 0; p < length; p++)
        {
            long row = slots[p] * rowStride;
            for (int j = 0; j < heads; j++)
            {
                float weight = scores[(long)j * length + p];
                var s = Vector256.Create(weight);
                float* o = output + j * hd;
                long at = row + (long)j * hd;
                for (int d = 0; d < blocks; d += 8)
                    Vector256.Store(Vector256.FusedMultiplyAdd(s, TStore.Load8(values, at + d), Vector256.Load(o + d)), o + d);
                if (blocks < hd) TStore.AddScaled(o + blocks, values, at + blocks, hd - blocks, weight * inv[j]);
            }
        }
        for (int j = 0; j < heads; j++)
        {
            var vi = Vector256.Create(inv[j]);
            float* o = output + j * hd;
            for (int d = 0; d < blocks; d += 8) Vector256.Store(Vector256.Load(o + d) * vi, o + d);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Score(float* scores, int length, float* max, int head, int p, float s)
    {
        scores[(long)head * length + p] = s;
        if (s > max[head]) max[head] = s;
    }

    /// <summary>
    /// scores[p] = q·k_p·scale for every position; returns the largest. Four positions at a time, each with its own sum, so
    /// four FMA chains run side by side instead of one (a head's 64 dims are 8 dependent FMAs); each position's sum is
    /// formed in the same order as <see cref="IKvStore.Dot"/>, so the scores are the same bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float Scores<TStore>(float* q, int hd, void* keys, long* slots, int length, long rowStride, float scale, float* scores)
        where TStore : struct, IKvStore
    {
        float max = float.NegativeInfinity;
        int p = 0;
        if ((hd & 7) == 0)
            for (; p + 4 <= length; p += 4)
            {
                long k0 = slots[p] * rowStride, k1 = slots[p + 1] * rowStride, k2 = slots[p + 2] * rowStride, k3 = slots[p + 3] * rowStride;
                var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
                for (int i = 0; i < hd; i += 8)
                {
                    var qi = Vector256.Load(q + i);
                    a0 = Vector256.FusedMultiplyAdd(qi, TStore.Load8(keys, k0 + i), a0);
                    a1 = Vector256.FusedMultiplyAdd(qi, TStore.Load8(keys, k1 + i), a1);
                    a2 = Vector256.FusedMultiplyAdd(qi, TStore.Load8(keys, k2 + i), a2);
                    a3 = Vector256.FusedMultiplyAdd(qi, TStore.Load8(keys, k3 + i), a3);
                }
                float s0 = Vector256.Sum(a0) * scale, s1 = Vector256.Sum(a1) * scale, s2 = Vector256.Sum(a2) * scale, s3 = Vector256.Sum(a3) * scale;
                scores[p] = s0; scores[p + 1] = s1; scores[p + 2] = s2; scores[p + 3] = s3;
                if (s0 > max) max = s0;
                if (s1 > max) max = s1;
                if (s2 > max) max = s2;
                if (s3 > max) max = s3;
            }
        for (; p < length; p++)
        {
            float s = TStore.Dot(q, keys, slots[p] * rowStride, hd) * scale;
            scores[p] = s;
            if (s > max) max = s;
        }
        return max;
    }

    /// <summary>s ← exp(s − max); returns Σ s.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float ExpInPlace(float* s, int n, float max)
    {
        var m = Vector256.Create(max);
        var acc = Vector256<float>.Zero;
        int i = 0;
        for (; i + 8 <= n; i += 8)
        {
            var e = Vector256.Exp(Vector256.Load(s + i) - m);
            Vector256.Store(e, s + i);
            acc += e;
        }
        float total = Vector256.Sum(acc);
        for (; i < n; i++) { s[i] = MathF.Exp(s[i] - max); total += s[i]; }
        return total;
    }

    /// <summary>Σ x[0..n).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(float* x, int n)
    {
        var acc = Vector256<float>.Zero;
        int i = 0;
        for (; i + 8 <= n; i += 8) acc += Vector256.Load(x + i);
        float s = Vector256.Sum(acc);
        for (; i < n; i++) s += x[i];
        return s;
    }

    /// <summary>y += x over n values.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void AddInPlace(float* y, float* x, int n)
    {
        int i = 0;
        for (; i + 8 <= n; i += 8) Vector256.Store(Vector256.Load(y + i) + Vector256.Load(x + i), y + i);
        for (; i < n; i++) y[i] += x[i];
    }

    /// <summary>bf16 → f32 (exact: the upper half of the f32).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Bf16ToF32(ushort v) => BitConverter.Int32BitsToSingle(v << 16);

    /// <summary>f32 → bf16 rounded to nearest even, as libtorch converts (values here are finite).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort F32ToBf16(float v)
    {
        uint bits = BitConverter.SingleToUInt32Bits(v);
        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }
}

/// <summary>Reads and writes one head's row of a KV store in its dtype (a struct per dtype: one specialised loop each).</summary>
internal unsafe interface IKvStore
{
    /// <summary>q · store[offset .. offset+n) in f32.</summary>
    static abstract float Dot(float* q, void* store, long offset, int n);
    /// <summary>store[offset .. offset+8) as f32.</summary>
    static abstract Vector256<float> Load8(void* store, long offset);
    /// <summary>y += a · store[offset .. offset+n).</summary>
    static abstract void AddScaled(float* y, void* store, long offset, int n, float a);
    /// <summary>store[offset .. offset+n) ← x (converted).</summary>
    static abstract void Write(void* store, long offset, float* x, int n);
}

/// <summary>An f32 KV store.</summary>
internal readonly unsafe struct F32KvStore : IKvStore
{
    public static Vector256<float> Load8(void* store, long offset) => Vector256.Load((float*)store + offset);

    public static float Dot(float* q, void* store, long offset, int n)
    {
        float* k = (float*)store + offset;
        var acc = Vector256<float>.Zero;
        int i = 0;
        for (; i + 8 <= n; i += 8) acc = Vector256.FusedMultiplyAdd(Vector256.Load(q + i), Vector256.Load(k + i), acc);
        float s = Vector256.Sum(acc);
        for (; i < n; i++) s += q[i] * k[i];
        return s;
    }

    public static void AddScaled(float* y, void* store, long offset, int n, float a)
    {
        float* v = (float*)store + offset;
        var av = Vector256.Create(a);
        int i = 0;
        for (; i + 8 <= n; i += 8) Vector256.Store(Vector256.FusedMultiplyAdd(av, Vector256.Load(v + i), Vector256.Load(y + i)), y + i);
        for (; i < n; i++) y[i] += a * v[i];
    }

    public static void Write(void* store, long offset, float* x, int n) =>
        new Span<float>(x, n).CopyTo(new Span<float>((float*)store + offset, n));
}

/// <summary>A bf16 KV store: widened to f32 as it is read.</summary>
internal readonly unsafe struct Bf16KvStore : IKvStore
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Load8(ushort* p) => Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(p), 16).AsSingle();

    public static Vector256<float> Load8(void* store, long offset) => Load8((ushort*)store + offset);

    public static float Dot(float* q, void* store, long offset, int n)
    {
        ushort* k = (ushort*)store + offset;
        var acc = Vector256<float>.Zero;
        int i = 0;
        for (; i + 8 <= n; i += 8) acc = Vector256.FusedMultiplyAdd(Vector256.Load(q + i), Load8(k + i), acc);
        float s = Vector256.Sum(acc);
        for (; i < n; i++) s += q[i] * DecodeKernels.Bf16ToF32(k[i]);
        return s;
    }

    public static void AddScaled(float* y, void* store, long offset, int n, float a)
    {
        ushort* v = (ushort*)store + offset;
        var av = Vector256.Create(a);
        int i = 0;
        for (; i + 8 <= n; i += 8) Vector256.Store(Vector256.FusedMultiplyAdd(av, Load8(v + i), Vector256.Load(y + i)), y + i);
        for (; i < n; i++) y[i] += a * DecodeKernels.Bf16ToF32(v[i]);
    }

    public static void Write(void* store, long offset, float* x, int n)
    {
        ushort* d = (ushort*)store + offset;
        for (int i = 0; i < n; i++) d[i] = DecodeKernels.F32ToBf16(x[i]);
    }
}
