using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Swarm.Model;

/// <summary>
/// Reads 8 consecutive weights of one stored type as f32 (AVX2), or one of them (the tail of a row).
/// Implemented by structs so the JIT compiles one specialised loop per format.
/// </summary>
internal unsafe interface IWeightLoader<TWeight> where TWeight : unmanaged
{
    static abstract Vector256<float> Load8(TWeight* p);
    static abstract float Load1(TWeight* p);
}

// Every Load8 is AggressiveInlining: a loader the JIT does not inline (f16's was not) costs a call per 8 weights with
// its vector returned through memory — half the speed of the same loop inlined.

/// <summary>f32 weights.</summary>
internal readonly unsafe struct F32Loader : IWeightLoader<float>
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(float* p) => Avx.LoadVector256(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load1(float* p) => *p;
}

/// <summary>bf16 weights: the upper half of an f32, so widening is a zero-extend and a shift.</summary>
internal readonly unsafe struct Bf16Loader : IWeightLoader<ushort>
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(ushort* p) => Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(p), 16).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load1(ushort* p) => BitConverter.Int32BitsToSingle(*p << 16);
}

/// <summary>
/// f16 weights as stored in a checkpoint, widened exactly (every finite value, ±0, ±∞ and NaNs as
/// <c>(float)Half</c> converts them) in integer arithmetic plus one subtraction on normal f32s: the exponent is re-biased
/// (15 → 127) by an integer add; f16 subnormals (exponent 0) are made as 2⁻¹⁴·1.m − 2⁻¹⁴; infinities and NaNs get the
/// top exponent. Never feeds a denormal to the FPU — the older form (magnitude bits × 2¹¹² in floating point) did for
/// every f16 subnormal, and without DAZ that is a slow path. It costs ~10 vector operations per 8 weights, which bounds a
/// core to about its share of memory bandwidth, so weights that fit are kept as <see cref="RebasedF16"/> instead.
/// </summary>
internal readonly unsafe struct F16Loader : IWeightLoader<ushort>
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(ushort* p)
    {
        var h = Avx2.ConvertToVector256Int32(p);
        var t = Avx2.ShiftRightLogical(Avx2.ShiftLeftLogical(h, 17), 4); // (h & 0x7fff) << 13: exponent and mantissa in f32 place
        var normal = Avx2.Add(t, Vector256.Create(112 << 23));
        var subnormal = Avx.Subtract(Avx2.Add(t, Vector256.Create(113 << 23)).AsSingle(), Vector256.Create(1f / 16384));
        var infNan = Avx2.Add(normal, Vector256.Create(112 << 23)).AsSingle();
        var magnitude = Avx.BlendVariable(normal.AsSingle(), subnormal, Avx2.CompareGreaterThan(Vector256.Create(1 << 23), t).AsSingle());
        magnitude = Avx.BlendVariable(magnitude, infNan, Avx2.CompareGreaterThan(t, Vector256.Create((31 << 23) - 1)).AsSingle());
        return Avx.Or(magnitude, Avx2.And(Avx2.ShiftLeftLogical(h, 16), Vector256.Create(int.MinValue)).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load1(ushort* p) => (float)BitConverter.UInt16BitsToHalf(*p);
}

/// <summary>int8 weights (the per-row scale is applied to the finished dot product).</summary>
internal readonly unsafe struct Int8Loader : IWeightLoader<sbyte>
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(sbyte* p) => Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(p));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load1(sbyte* p) => *p;
}

/// <summary>
/// Matrix-vector products for batch-1 (and small-batch) decode: y[b, r] = scale[r]·(x[b] · w[r]) + bias[r] over weight rows
/// [r0, r1) of a row-major [out, in] matrix, with f32 activations and f32 accumulation. Decode is bound by the bytes of
/// weights it streams; these loops widen each stored weight to f32 in registers as it streams past, so a half or int8
/// matrix is read at its own size (libtorch 2.10's bf16 GEMV on this CPU class runs at a third of the bandwidth; its
/// int8 kernel, <c>_weight_int8pack_mm</c>, is vectorised only for bf16 activations and is slower still — measured
/// side by side in one process). Requires AVX2 and FMA (<see cref="IsSupported"/>); callers fall back to libtorch.
/// </summary>
internal static unsafe class GemvKernels
{
    /// <summary>True when the CPU has the instructions these loops use.</summary>
    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>
    /// Rows [r0, r1) of y = x·Wᵀ for <paramref name="rows"/> input rows. x: [rows, k] f32; w: [out, k]; y: [rows, ldy] f32.
    /// <paramref name="scales"/> (per output row) and <paramref name="bias"/> may be null.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run<TWeight, TLoader>(float* x, int rows, TWeight* w, int k, int r0, int r1, float* scales, float* bias, float* y, int ldy)
        where TWeight : unmanaged where TLoader : struct, IWeightLoader<TWeight>
    {
        // Five or more input rows on an AVX-512 CPU: the register-tiled kernel (compute-bound, weights read once).
        if (rows > 4 && GemmKernels.TryRun<TWeight, TLoader>(x, rows, w, k, r0, r1, scales, bias, y, ldy)) return;
        // Otherwise more than four input rows take several passes over the weights: a block of weight rows that stays in the core's
        // L2 cache goes through every group of four input rows before the next block is read, so memory sees each weight
        // once whatever the number of rows (decode of many sequences at once). Those passes are bound by the FMAs rather
        // than memory, so full groups take two weight rows at a time (FourRowsPaired: single-thread A/B over pythia-160m's
        // f32 matrices at 64 rows, one process, 1.12–1.25×); streaming from memory (≤ 4 rows) it measured slower, so not there.
        int block = rows <= 4 ? r1 - r0 : BlockRows(k, sizeof(TWeight));
        for (int rb = r0; rb < r1; rb += block)
        {
            int re = Math.Min(r1, rb + block);
            for (int b = 0; b < rows; b += 4)
            {
                int n = Math.Min(4, rows - b);
                float* x0 = x + (long)b * k;
                if (n == 1) SingleRow<TWeight, TLoader>(x0, w, k, rb, re, scales, bias, y + (long)b * ldy);
                else if (n == 4 && rows > 4) FourRowsPaired<TWeight, TLoader>(x0, w, k, rb, re, scales, bias, y + (long)b * ldy, ldy);
                else FourRows<TWeight, TLoader>(x0, n, w, k, rb, re, scales, bias, y + (long)b * ldy, ldy);
            }
        }
    }

    /// <summary>Bytes of weights one cache block holds (half a typical 512 KiB–1 MiB L2, leaving room for the activations).</summary>
    public const int BlockBytes = 256 * 1024;

    /// <summary>Weight rows of <paramref name="k"/> elements of <paramref name="elementSize"/> bytes per cache block (at least 8).</summary>
    public static int BlockRows(int k, int elementSize) => Math.Max(8, BlockBytes / Math.Max(1, k * elementSize));

    /// <summary>One input row: four independent accumulators keep the FMA pipes busy.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SingleRow<TWeight, TLoader>(float* x, TWeight* w, int k, int r0, int r1, float* scales, float* bias, float* y)
        where TWeight : unmanaged where TLoader : struct, IWeightLoader<TWeight>
    {
        for (int r = r0; r < r1; r++)
        {
            TWeight* wr = w + (long)r * k;
            var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            int i = 0;
            for (; i + 32 <= k; i += 32)
            {
                a0 = Fma.MultiplyAdd(TLoader.Load8(wr + i), Avx.LoadVector256(x + i), a0);
                a1 = Fma.MultiplyAdd(TLoader.Load8(wr + i + 8), Avx.LoadVector256(x + i + 8), a1);
                a2 = Fma.MultiplyAdd(TLoader.Load8(wr + i + 16), Avx.LoadVector256(x + i + 16), a2);
                a3 = Fma.MultiplyAdd(TLoader.Load8(wr + i + 24), Avx.LoadVector256(x + i + 24), a3);
            }
            for (; i + 8 <= k; i += 8) a0 = Fma.MultiplyAdd(TLoader.Load8(wr + i), Avx.LoadVector256(x + i), a0);
            float s = Sum(Avx.Add(Avx.Add(a0, a1), Avx.Add(a2, a3)));
            for (; i < k; i++) s += TLoader.Load1(wr + i) * x[i];
            y[r] = Finish(s, r, scales, bias);
        }
    }

    /// <summary>
    /// Four input rows and two weight rows at a time: eight independent sums, enough to keep both FMA pipes busy through
    /// the FMA's latency (four sums — one weight row — leave them half idle once there are rows enough to be compute-bound),
    /// and each loaded activation vector serves two weight rows. An odd last weight row goes through <see cref="FourRows"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void FourRowsPaired<TWeight, TLoader>(float* x, TWeight* w, int k, int r0, int r1, float* scales, float* bias, float* y, int ldy)
        where TWeight : unmanaged where TLoader : struct, IWeightLoader<TWeight>
    {
        float* x1 = x + k, x2 = x + 2L * k, x3 = x + 3L * k;
        int r = r0;
        for (; r + 2 <= r1; r += 2)
        {
            TWeight* wa = w + (long)r * k, wb = wa + k;
            var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            var b0 = a0; var b1 = a0; var b2 = a0; var b3 = a0;
            int i = 0;
            for (; i + 8 <= k; i += 8)
            {
                var va = TLoader.Load8(wa + i);
                var vb = TLoader.Load8(wb + i);
                var v = Avx.LoadVector256(x + i);
                a0 = Fma.MultiplyAdd(va, v, a0); b0 = Fma.MultiplyAdd(vb, v, b0);
                v = Avx.LoadVector256(x1 + i);
                a1 = Fma.MultiplyAdd(va, v, a1); b1 = Fma.MultiplyAdd(vb, v, b1);
                v = Avx.LoadVector256(x2 + i);
                a2 = Fma.MultiplyAdd(va, v, a2); b2 = Fma.MultiplyAdd(vb, v, b2);
                v = Avx.LoadVector256(x3 + i);
                a3 = Fma.MultiplyAdd(va, v, a3); b3 = Fma.MultiplyAdd(vb, v, b3);
            }
            float sa0 = Sum(a0), sa1 = Sum(a1), sa2 = Sum(a2), sa3 = Sum(a3);
            float sb0 = Sum(b0), sb1 = Sum(b1), sb2 = Sum(b2), sb3 = Sum(b3);
            for (; i < k; i++)
            {
                float wai = TLoader.Load1(wa + i), wbi = TLoader.Load1(wb + i);
                sa0 += wai * x[i]; sa1 += wai * x1[i]; sa2 += wai * x2[i]; sa3 += wai * x3[i];
                sb0 += wbi * x[i]; sb1 += wbi * x1[i]; sb2 += wbi * x2[i]; sb3 += wbi * x3[i];
            }
            y[r] = Finish(sa0, r, scales, bias); y[r + 1] = Finish(sb0, r + 1, scales, bias);
            y[ldy + r] = Finish(sa1, r, scales, bias); y[ldy + r + 1] = Finish(sb1, r + 1, scales, bias);
            y[2L * ldy + r] = Finish(sa2, r, scales, bias); y[2L * ldy + r + 1] = Finish(sb2, r + 1, scales, bias);
            y[3L * ldy + r] = Finish(sa3, r, scales, bias); y[3L * ldy + r + 1] = Finish(sb3, r + 1, scales, bias);
        }
        if (r < r1) FourRows<TWeight, TLoader>(x, 4, w, k, r, r1, scales, bias, y, ldy);
    }

    /// <summary>Two to four input rows: each weight vector is widened once and multiplied into every row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void FourRows<TWeight, TLoader>(float* x, int n, TWeight* w, int k, int r0, int r1, float* scales, float* bias, float* y, int ldy)
        where TWeight : unmanaged where TLoader : struct, IWeightLoader<TWeight>
    {
        // Missing rows (n < 4) read row 0 again and their sums are dropped: cheaper than four loop variants.
        float* x1 = x + (n > 1 ? k : 0), x2 = x + (n > 2 ? 2L * k : 0), x3 = x + (n > 3 ? 3L * k : 0);
        for (int r = r0; r < r1; r++)
        {
            TWeight* wr = w + (long)r * k;
            var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            int i = 0;
            for (; i + 8 <= k; i += 8)
            {
                var wv = TLoader.Load8(wr + i);
                a0 = Fma.MultiplyAdd(wv, Avx.LoadVector256(x + i), a0);
                a1 = Fma.MultiplyAdd(wv, Avx.LoadVector256(x1 + i), a1);
                a2 = Fma.MultiplyAdd(wv, Avx.LoadVector256(x2 + i), a2);
                a3 = Fma.MultiplyAdd(wv, Avx.LoadVector256(x3 + i), a3);
            }
            float s0 = Sum(a0), s1 = Sum(a1), s2 = Sum(a2), s3 = Sum(a3);
            for (; i < k; i++)
            {
                float wi = TLoader.Load1(wr + i);
                s0 += wi * x[i]; s1 += wi * x1[i]; s2 += wi * x2[i]; s3 += wi * x3[i];
            }
            y[r] = Finish(s0, r, scales, bias);
            if (n > 1) y[ldy + r] = Finish(s1, r, scales, bias);
            if (n > 2) y[2L * ldy + r] = Finish(s2, r, scales, bias);
            if (n > 3) y[3L * ldy + r] = Finish(s3, r, scales, bias);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Finish(float dot, int r, float* scales, float* bias) =>
        (scales == null ? dot : dot * scales[r]) + (bias == null ? 0f : bias[r]);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Sum(Vector256<float> v)
    {
        var s = Sse.Add(v.GetLower(), v.GetUpper());
        s = Sse.Add(s, Sse.MoveHighToLow(s, s));
        s = Sse.AddScalar(s, Sse.Shuffle(s, s, 1));
        return s.ToScalar();
    }
}
