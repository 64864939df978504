using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Swarm.Model;

/// <summary>Reads 16 consecutive weights of one stored type as f32 (AVX-512); a struct per format, as <see cref="IWeightLoader{TWeight}"/>.</summary>
internal unsafe interface IWideWeightLoader<TWeight> where TWeight : unmanaged
{
    static abstract Vector512<float> Load16(TWeight* p);
    static abstract float Load1(TWeight* p);
}

/// <summary>f32 weights, 16 at a time.</summary>
internal readonly unsafe struct F32WideLoader : IWideWeightLoader<float>
{
    public static Vector512<float> Load16(float* p) => Avx512F.LoadVector512(p);
    public static float Load1(float* p) => *p;
}

/// <summary>bf16 weights, 16 at a time: zero-extend and shift into the upper half of each f32.</summary>
internal readonly unsafe struct Bf16WideLoader : IWideWeightLoader<ushort>
{
    public static Vector512<float> Load16(ushort* p) =>
        Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Avx.LoadVector256(p)), 16).AsSingle();
    public static float Load1(ushort* p) => BitConverter.Int32BitsToSingle(*p << 16);
}

/// <summary>f16 weights, 16 at a time, by the re-biasing multiply of <see cref="F16Loader"/>.</summary>
internal readonly unsafe struct F16WideLoader : IWideWeightLoader<ushort>
{
    public static Vector512<float> Load16(ushort* p)
    {
        var h = Avx512F.ConvertToVector512Int32(Avx.LoadVector256(p));
        var magnitude = Avx512F.ShiftLeftLogical(Avx512F.And(h, Vector512.Create(0x7fff)), 13).AsSingle();
        var sign = Avx512F.ShiftLeftLogical(Avx512F.And(h, Vector512.Create(0x8000)), 16).AsSingle();
        return Avx512F.Or(Avx512F.Multiply(magnitude, Vector512.Create(BitConverter.Int32BitsToSingle(0x77800000))).AsInt32(), sign.AsInt32()).AsSingle();
    }

    public static float Load1(ushort* p) => (float)BitConverter.UInt16BitsToHalf(*p);
}

/// <summary>int8 weights, 16 at a time (the per-row scale is applied to the finished dot product).</summary>
internal readonly unsafe struct Int8WideLoader : IWideWeightLoader<sbyte>
{
    public static Vector512<float> Load16(sbyte* p) => Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Sse2.LoadVector128(p)));
    public static float Load1(sbyte* p) => *p;
}

/// <summary>
/// The matrix product of a batch of decodes (5 to a few dozen input rows): y[b, r] = scale[r]·(x[b] · w[r]) + bias[r] over
/// weight rows [r0, r1) of a row-major [out, in] matrix, f32 activations and accumulation, compute-bound where the
/// GEMV kernels (<see cref="GemvKernels"/>) are bound by memory. A register tile of 4 input rows × 4 weight rows keeps
/// sixteen 512-bit sums (enough to cover the FMA latency on both pipes, one activation and one weight load per four
/// FMAs); the 4 weight rows of a tile stay in L1 while every group of 4 input rows goes past them (from L2), so memory
/// reads each weight once, in order. The next tile's rows are prefetched while a tile computes, by its last groups:
/// with the hardware prefetcher alone the first group of every tile waited on memory and the others left it idle
/// (16 rows of pythia-160m, one run of <c>swarm bench batching</c> built with timers per fork: the q/k/v + MLP-up fork 16 → 12 ms a step, the head
/// 11.4 → 8.0; 64 rows: 38 → 34 and 28 → 25); prefetched by the first groups instead, as before, 64 jobs were slower
/// (three interleaved runs of <c>swarm bench batching</c> against the build before, together with <see cref="Sum16"/>:
/// 597 / 619 / 645 → 668 / 640 / 641 tokens/s). Long rows are cut into
/// blocks of <see cref="KBlock"/> inputs, partial sums added in y, so a tile's weights fit L1 and the activations' block
/// fits L2. Requires AVX-512F (<see cref="IsSupported"/>).
/// </summary>
internal static unsafe class GemmKernels
{
    /// <summary>True when the CPU runs 512-bit vectors (AVX-512F) at full rate.</summary>
    public static bool IsSupported => Avx512F.IsSupported && Vector512.IsHardwareAccelerated;

    /// <summary>Most inputs of a k-block: 4 weight rows of it in f32 (16 KiB) stay in L1 beside the activations' loads.</summary>
    public const int KBlock = 1024;

    /// <summary>
    /// Runs the product when this kernel handles the weight format (<typeparamref name="TLoader"/> is one of the
    /// <see cref="GemvKernels"/> loaders) and the CPU has AVX-512; false (nothing done) otherwise. Arguments as
    /// <see cref="GemvKernels.Run{TWeight, TLoader}"/>.
    /// </summary>
    public static bool TryRun<TWeight, TLoader>(float* x, int rows, TWeight* w, int k, int r0, int r1, float* scales, float* bias, float* y, int ldy)
        where TWeight : unmanaged where TLoader : struct, IWeightLoader<TWeight>
    {
        if (!IsSupported) return false;
        // Type tests on a struct type parameter are constants to the JIT: one branch survives per instantiation.
        if (typeof(TLoader) == typeof(F32Loader)) Run<float, F32WideLoader>(x, rows, (float*)w, k, r0, r1, scales, bias, y, ldy);
        else if (typeof(TLoader) == typeof(Bf16Loader)) Run<ushort, Bf16WideLoader>(x, rows, (ushort*)w, k, r0, r1, scales, bias, y, ldy);
        else if (typeof(TLoader) == typeof(F16Loader)) Run<ushort, F16WideLoader>(x, rows, (ushort*)w, k, r0, r1, scales, bias, y, ldy);
        else if (typeof(TLoader) == typeof(RebasedF16Loader)) Run<ushort, RebasedF16WideLoader>(x, rows, (ushort*)w, k, r0, r1, scales, bias, y, ldy);
        else if (typeof(TLoader) == typeof(Int8Loader)) Run<sbyte, Int8WideLoader>(x, rows, (sbyte*)w, k, r0, r1, scales, bias, y, ldy);
        else return false;
        return true;
    }

    /// <summary>
    /// Rows [r0, r1) of y = x·Wᵀ for <paramref name="rows"/> input rows. x: [rows, k] f32; w: [out, k]; y: [rows, ldy] f32.
    /// <paramref name="scales"/> (per output row) and <paramref name="bias"/> may be null.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run<TWeight, TLoader>(float* x, int rows, TWeight* w, int k, int r0, int r1, float* scales, float* bias, float* y, int ldy)
        where TWeight : unmanaged where TLoader : struct, IWideWeightLoader<TWeight>
    {
        int blocks = Math.Max(1, (k + KBlock - 1) / KBlock);
        int kb = (k / blocks + 15) & ~15; // equal blocks, whole vectors but for the last one's tail
        for (int k0 = 0; k0 < k; k0 += kb)
        {
            int kl = Math.Min(kb, k - k0);
            var pass = new Pass(first: k0 == 0, last: k0 + kl == k, scales, bias);
            int groups = (rows + 3) / 4;
            for (int r = r0; r < r1; r += 4)
            {
                int nw = Math.Min(4, r1 - r);
                // The next tile's weight rows are fetched while this one computes, one row per group of input rows in
                // the tile's last groups (two per group when there are fewer groups than rows): memory streams through
                // the tile rather than only while the first group waits on it. Fetched by the first groups instead, the
                // rows wait longer in the caches before they are used, and the products were slower.
                TWeight* next = r + 4 < r1 ? w + (long)(r + 4) * k + k0 : null;
                int nextRows = Math.Min(4, r1 - r - 4);
                int firstPrefetching = groups - Math.Min(groups, Math.Max(nextRows, 0));
                for (int b = 0, g = 0; b < rows; b += 4, g++)
                {
                    int pg = g - firstPrefetching; // this group's place among the prefetching groups
                    TWeight* pa = next != null && pg >= 0 && pg < nextRows ? next + (long)pg * k : null;
                    TWeight* pb = next != null && pg >= 0 && pg + groups < nextRows ? next + (long)(pg + groups) * k : null;
                    Tile<TWeight, TLoader>(x + (long)b * k + k0, k, Math.Min(4, rows - b), w + (long)r * k + k0, k, nw, kl,
                        y + (long)b * ldy + r, ldy, r, pass, pa, pb);
                }
            }
        }
    }

    /// <summary>What a k-block does with its partial sums: the first stores them, later ones add; the last finishes them.</summary>
    private readonly struct Pass(bool first, bool last, float* scales, float* bias)
    {
        public readonly bool First = first, Last = last;
        public readonly float* Scales = scales, Bias = bias;
    }

    /// <summary>
    /// y[i, j] (+)= x[i] · w[j] over <paramref name="kl"/> inputs for i &lt; <paramref name="nx"/>, j &lt; <paramref name="nw"/>
    /// (at most 4 each). Missing rows read row 0 again and their sums are dropped: one loop for every edge.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Tile<TWeight, TLoader>(float* x, int ldx, int nx, TWeight* w, int ldw, int nw, int kl, float* y, int ldy, int r, in Pass pass,
        TWeight* prefetchA, TWeight* prefetchB)
        where TWeight : unmanaged where TLoader : struct, IWideWeightLoader<TWeight>
    {
        if (prefetchA != null)
        {
            if (prefetchB != null) Tile<TWeight, TLoader, Two>(x, ldx, nx, w, ldw, nw, kl, y, ldy, r, pass, prefetchA, prefetchB);
            else Tile<TWeight, TLoader, One>(x, ldx, nx, w, ldw, nw, kl, y, ldy, r, pass, prefetchA, prefetchA);
        }
        else Tile<TWeight, TLoader, None>(x, ldx, nx, w, ldw, nw, kl, y, ldy, r, pass, w, w);
    }

    /// <summary>How many weight rows a tile prefetches for the next (type tests on it are constants to the JIT).</summary>
    private interface IPrefetchRows;
    private struct None : IPrefetchRows;
    private struct One : IPrefetchRows;
    private struct Two : IPrefetchRows;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile<TWeight, TLoader, TPrefetch>(float* x, int ldx, int nx, TWeight* w, int ldw, int nw, int kl, float* y, int ldy, int r, in Pass pass,
        TWeight* prefetchA, TWeight* prefetchB)
        where TWeight : unmanaged where TLoader : struct, IWideWeightLoader<TWeight> where TPrefetch : struct, IPrefetchRows
    {
        float* x0 = x, x1 = x + (nx > 1 ? ldx : 0), x2 = x + (nx > 2 ? 2L * ldx : 0), x3 = x + (nx > 3 ? 3L * ldx : 0);
        TWeight* w0 = w, w1 = w + (nw > 1 ? ldw : 0), w2 = w + (nw > 2 ? 2L * ldw : 0), w3 = w + (nw > 3 ? 3L * ldw : 0);
        var a00 = Vector512<float>.Zero; var a01 = a00; var a02 = a00; var a03 = a00;
        var a10 = a00; var a11 = a00; var a12 = a00; var a13 = a00;
        var a20 = a00; var a21 = a00; var a22 = a00; var a23 = a00;
        var a30 = a00; var a31 = a00; var a32 = a00; var a33 = a00;
        int i = 0;
        for (; i + 16 <= kl; i += 16)
        {
            if (typeof(TPrefetch) != typeof(None)) Sse.Prefetch1(prefetchA + i);
            if (typeof(TPrefetch) == typeof(Two)) Sse.Prefetch1(prefetchB + i);
            var v0 = Avx512F.LoadVector512(x0 + i); var v1 = Avx512F.LoadVector512(x1 + i);
            var v2 = Avx512F.LoadVector512(x2 + i); var v3 = Avx512F.LoadVector512(x3 + i);
            var u = TLoader.Load16(w0 + i);
            a00 = Avx512F.FusedMultiplyAdd(v0, u, a00); a10 = Avx512F.FusedMultiplyAdd(v1, u, a10);
            a20 = Avx512F.FusedMultiplyAdd(v2, u, a20); a30 = Avx512F.FusedMultiplyAdd(v3, u, a30);
            u = TLoader.Load16(w1 + i);
            a01 = Avx512F.FusedMultiplyAdd(v0, u, a01); a11 = Avx512F.FusedMultiplyAdd(v1, u, a11);
            a21 = Avx512F.FusedMultiplyAdd(v2, u, a21); a31 = Avx512F.FusedMultiplyAdd(v3, u, a31);
            u = TLoader.Load16(w2 + i);
            a02 = Avx512F.FusedMultiplyAdd(v0, u, a02); a12 = Avx512F.FusedMultiplyAdd(v1, u, a12);
            a22 = Avx512F.FusedMultiplyAdd(v2, u, a22); a32 = Avx512F.FusedMultiplyAdd(v3, u, a32);
            u = TLoader.Load16(w3 + i);
            a03 = Avx512F.FusedMultiplyAdd(v0, u, a03); a13 = Avx512F.FusedMultiplyAdd(v1, u, a13);
            a23 = Avx512F.FusedMultiplyAdd(v2, u, a23); a33 = Avx512F.FusedMultiplyAdd(v3, u, a33);
        }
        var sums = Sum16(a00, a10, a20, a30, a01, a11, a21, a31, a02, a12, a22, a32, a03, a13, a23, a33);
        var s0 = sums.GetLower().GetLower();
        var s1 = sums.GetLower().GetUpper();
        var s2 = sums.GetUpper().GetLower();
        var s3 = sums.GetUpper().GetUpper();
        if (i < kl)
        {
            s0 += Tail<TWeight, TLoader>(x0, w0, w1, w2, w3, i, kl);
            s1 += Tail<TWeight, TLoader>(x1, w0, w1, w2, w3, i, kl);
            s2 += Tail<TWeight, TLoader>(x2, w0, w1, w2, w3, i, kl);
            s3 += Tail<TWeight, TLoader>(x3, w0, w1, w2, w3, i, kl);
        }
        Store(s0, y, nw, r, pass);
        if (nx > 1) Store(s1, y + ldy, nw, r, pass);
        if (nx > 2) Store(s2, y + 2L * ldy, nw, r, pass);
        if (nx > 3) Store(s3, y + 3L * ldy, nw, r, pass);
    }

    /// <summary>The sums of x · w0..w3 over inputs [i, kl) (the last block's tail of fewer than 16), one scalar at a time.</summary>
    private static Vector128<float> Tail<TWeight, TLoader>(float* x, TWeight* w0, TWeight* w1, TWeight* w2, TWeight* w3, int i, int kl)
        where TWeight : unmanaged where TLoader : struct, IWideWeightLoader<TWeight>
    {
        float t0 = 0, t1 = 0, t2 = 0, t3 = 0;
        for (; i < kl; i++)
        {
            t0 += x[i] * TLoader.Load1(w0 + i); t1 += x[i] * TLoader.Load1(w1 + i);
            t2 += x[i] * TLoader.Load1(w2 + i); t3 += x[i] * TLoader.Load1(w3 + i);
        }
        return Vector128.Create(t0, t1, t2, t3);
    }

    /// <summary>Writes (first block) or adds (later blocks) one input row's four sums, finished with scale and bias on the last block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Vector128<float> s, float* y, int nw, int r, in Pass pass)
    {
        if (nw == 4)
        {
            if (!pass.First) s += Vector128.Load(y);
            if (pass.Last)
            {
                if (pass.Scales != null) s *= Vector128.Load(pass.Scales + r);
                if (pass.Bias != null) s += Vector128.Load(pass.Bias + r);
            }
            s.Store(y);
            return;
        }
        for (int j = 0; j < nw; j++)
        {
            float v = s.GetElement(j);
            if (!pass.First) v += y[j];
            if (pass.Last)
            {
                if (pass.Scales != null) v *= pass.Scales[r + j];
                if (pass.Bias != null) v += pass.Bias[r + j];
            }
            y[j] = v;
        }
    }

    /// <summary>
    /// The horizontal sums of a tile's sixteen vectors, a[i, j] = row i × weight row j: 128-bit lane i of the result is
    /// [Σa[i,0], Σa[i,1], Σa[i,2], Σa[i,3]]. Lanes are folded across the four rows of each weight row first (whole-lane
    /// shuffles), then the four weight rows are transposed within lanes: 45 operations, where summing the tile four vectors
    /// at a time (halves, then horizontal adds) took about 76, most of them shuffles.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Sum16(
        Vector512<float> a00, Vector512<float> a10, Vector512<float> a20, Vector512<float> a30,
        Vector512<float> a01, Vector512<float> a11, Vector512<float> a21, Vector512<float> a31,
        Vector512<float> a02, Vector512<float> a12, Vector512<float> a22, Vector512<float> a32,
        Vector512<float> a03, Vector512<float> a13, Vector512<float> a23, Vector512<float> a33)
    {
        var u0 = FoldRows(a00, a10, a20, a30); var u1 = FoldRows(a01, a11, a21, a31);
        var u2 = FoldRows(a02, a12, a22, a32); var u3 = FoldRows(a03, a13, a23, a33);
        // Within each lane i: [u0 u1 u2 u3] partial sums of four → [Σu0 Σu1 Σu2 Σu3].
        var s01 = Avx512F.Add(Avx512F.UnpackLow(u0, u1), Avx512F.UnpackHigh(u0, u1)); // [u0₀₂ u1₀₂ u0₁₃ u1₁₃]
        var s23 = Avx512F.Add(Avx512F.UnpackLow(u2, u3), Avx512F.UnpackHigh(u2, u3));
        return Avx512F.Add(Avx512F.UnpackLow(s01.AsDouble(), s23.AsDouble()).AsSingle(), Avx512F.UnpackHigh(s01.AsDouble(), s23.AsDouble()).AsSingle());
    }

    /// <summary>Four rows' sums of one weight row folded to a lane each: lane i = four partial sums of <c>r{i}</c> (elements e, e+4, e+8, e+12 added).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> FoldRows(Vector512<float> r0, Vector512<float> r1, Vector512<float> r2, Vector512<float> r3)
    {
        var t01 = Avx512F.Add(Avx512F.Shuffle4x128(r0, r1, 0x44), Avx512F.Shuffle4x128(r0, r1, 0xEE)); // [r0 L0+L2, r0 L1+L3, r1 …, r1 …]
        var t23 = Avx512F.Add(Avx512F.Shuffle4x128(r2, r3, 0x44), Avx512F.Shuffle4x128(r2, r3, 0xEE));
        return Avx512F.Add(Avx512F.Shuffle4x128(t01, t23, 0x88), Avx512F.Shuffle4x128(t01, t23, 0xDD));
    }
}
