using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Swarm.Model;

/// <summary>
/// f32 activations quantized for the integer int8 GEMV: each row cut into blocks of <see cref="Int8Kernels.Block"/>
/// values, each block stored as int16 with its own f32 scale (max|x| / 32767). Fifteen bits per block keep the
/// activation's rounding (≤ 1.5·10⁻⁵ of the block's largest value) far below the int8 weights' own (≤ 0.4 % of the row's
/// largest weight), so the product is as close to the f32 one as the float kernel's.
/// </summary>
internal readonly unsafe struct Int8Activations(short* values, float* scales, float* x, int rows, int k)
{
    /// <summary>Quantized values, [rows, k].</summary>
    public short* Values { get; } = values;
    /// <summary>One scale per block, [rows, <see cref="Int8Kernels.Blocks"/>(k)].</summary>
    public float* Scales { get; } = scales;
    /// <summary>The f32 activations they came from, [rows, k] (the tail of a row that fills no 32-value vector is read from here).</summary>
    public float* X { get; } = x;
    public int Rows { get; } = rows;
    public int K { get; } = k;
}

/// <summary>
/// The int8 GEMV with integer products (AVX-512BW): 32 weights at a time sign-extended to int16 and multiplied into the
/// int16 activations of <see cref="Int8Activations"/> with vpmaddwd (pairs summed into int32 lanes), each block's int32
/// sum turned into f32 once with the block's scale. Two instructions per 32 weights instead of the float kernel's three
/// per 8 (widen to int32, convert, FMA), which on two cores is what kept int8 decode below its bandwidth. Same blocking
/// over rows as <see cref="GemvKernels"/>.
/// </summary>
internal static unsafe class Int8Kernels
{
    /// <summary>Activation values per scale. int32 lanes hold a block's products: 16 pairs of 127·32767 each at most.</summary>
    public const int Block = 256;

    /// <summary>True when the CPU has AVX-512BW (otherwise int8 weights use the float kernel of <see cref="GemvKernels"/>).</summary>
    public static bool IsSupported => Avx512BW.IsSupported && Avx512F.IsSupported;

    /// <summary>Scales per row of <paramref name="k"/> values.</summary>
    public static int Blocks(int k) => (k + Block - 1) / Block;

    /// <summary>Quantizes x [rows, k] into <paramref name="values"/> [rows, k] and <paramref name="scales"/> [rows, Blocks(k)].</summary>
    public static Int8Activations Quantize(float* x, int rows, int k, short* values, float* scales)
    {
        int blocks = Blocks(k);
        for (int r = 0; r < rows; r++)
            for (int b = 0; b < blocks; b++)
            {
                int i0 = b * Block, n = Math.Min(Block, k - i0);
                float* xs = x + (long)r * k + i0;
                short* q = values + (long)r * k + i0;
                float max = MaxAbs(xs, n);
                float scale = max / 32767f, inv = max > 0 ? 32767f / max : 0f;
                scales[(long)r * blocks + b] = scale;
                var vinv = Vector512.Create(inv);
                int i = 0;
                for (; i + 16 <= n; i += 16)
                    Avx512F.ConvertToVector256Int16(Avx512F.ConvertToVector512Int32(Vector512.Load(xs + i) * vinv)).Store(q + i);
                for (; i < n; i++) q[i] = (short)MathF.Round(xs[i] * inv);
            }
        return new Int8Activations(values, scales, x, rows, k);
    }

    private static float MaxAbs(float* x, int n)
    {
        var m = Vector512<float>.Zero;
        int i = 0;
        for (; i + 16 <= n; i += 16) m = Vector512.Max(m, Vector512.Abs(Vector512.Load(x + i)));
        float s = 0;
        for (int j = 0; j < Vector512<float>.Count; j++) s = MathF.Max(s, m[j]);
        for (; i < n; i++) s = MathF.Max(s, MathF.Abs(x[i]));
        return s;
    }

    /// <summary>
    /// Rows [r0, r1) of y = (a · qᵀ)·rowScale + bias for the quantized activations <paramref name="a"/> and int8 weights
    /// <paramref name="w"/> [out, k]; y: [a.Rows, ldy].
    /// </summary>
    public static void Run(in Int8Activations a, sbyte* w, int r0, int r1, float* rowScales, float* bias, float* y, int ldy)
    {
        int rows = a.Rows, k = a.K;
        int block = rows <= 4 ? r1 - r0 : GemvKernels.BlockRows(k, 1);
        for (int rb = r0; rb < r1; rb += block)
        {
            int re = Math.Min(r1, rb + block);
            for (int b = 0; b < rows; b += 4)
                FourRows(a, b, Math.Min(4, rows - b), w, rb, re, rowScales, bias, y + (long)b * ldy, ldy);
        }
    }

    /// <summary>Input rows [first, first+n), n ≤ 4: each 32 weights are widened once and multiplied into every row.</summary>
    private static void FourRows(in Int8Activations a, int first, int n, sbyte* w, int r0, int r1, float* rowScales, float* bias, float* y, int ldy)
    {
        int k = a.K, blocks = Blocks(k), k32 = k & ~31;
        // Missing rows (n < 4) read the first row again and their sums are dropped.
        long o1 = n > 1 ? k : 0, o2 = n > 2 ? 2L * k : 0, o3 = n > 3 ? 3L * k : 0;
        short* q0 = a.Values + (long)first * k, q1 = q0 + o1, q2 = q0 + o2, q3 = q0 + o3;
        float* s0 = a.Scales + (long)first * blocks;
        int sb1 = n > 1 ? blocks : 0, sb2 = n > 2 ? 2 * blocks : 0, sb3 = n > 3 ? 3 * blocks : 0;
        for (int r = r0; r < r1; r++)
        {
            sbyte* wr = w + (long)r * k;
            var f0 = Vector512<float>.Zero; var f1 = f0; var f2 = f0; var f3 = f0;
            for (int bi = 0, i = 0; i < k32; bi++)
            {
                int end = Math.Min(k32, i + Block);
                var i0 = Vector512<int>.Zero; var i1 = i0; var i2 = i0; var i3 = i0;
                for (; i < end; i += 32)
                {
                    var wv = Avx512BW.ConvertToVector512Int16(Vector256.Load(wr + i));
                    i0 += Avx512BW.MultiplyAddAdjacent(wv, Vector512.Load(q0 + i));
                    if (n == 1) continue;
                    i1 += Avx512BW.MultiplyAddAdjacent(wv, Vector512.Load(q1 + i));
                    i2 += Avx512BW.MultiplyAddAdjacent(wv, Vector512.Load(q2 + i));
                    i3 += Avx512BW.MultiplyAddAdjacent(wv, Vector512.Load(q3 + i));
                }
                f0 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(i0), Vector512.Create(s0[bi]), f0);
                if (n == 1) continue;
                f1 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(i1), Vector512.Create(s0[sb1 + bi]), f1);
                f2 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(i2), Vector512.Create(s0[sb2 + bi]), f2);
                f3 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(i3), Vector512.Create(s0[sb3 + bi]), f3);
            }
            float* x0 = a.X + (long)first * k;
            y[r] = Finish(Vector512.Sum(f0) + Tail(wr, x0, k32, k), r, rowScales, bias);
            if (n > 1) y[ldy + r] = Finish(Vector512.Sum(f1) + Tail(wr, x0 + o1, k32, k), r, rowScales, bias);
            if (n > 2) y[2L * ldy + r] = Finish(Vector512.Sum(f2) + Tail(wr, x0 + o2, k32, k), r, rowScales, bias);
            if (n > 3) y[3L * ldy + r] = Finish(Vector512.Sum(f3) + Tail(wr, x0 + o3, k32, k), r, rowScales, bias);
        }
    }

    /// <summary>The last k mod 32 products, in f32 from the unquantized activations.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Tail(sbyte* w, float* x, int from, int k)
    {
        float s = 0;
        for (int i = from; i < k; i++) s += w[i] * x[i];
        return s;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Finish(float dot, int r, float* scales, float* bias) => dot * scales[r] + (bias == null ? 0f : bias[r]);
}
