using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static TorchSharp.torch;

namespace Swarm.Model;

/// <summary>
/// f16 weights re-encoded at load so the GEMV widens them in four vector operations per 8 weights instead of ~10: each
/// 16-bit code is the sign, a 5-bit exponent and the 10-bit mantissa of w·2⁻¹⁰² as an f32, so widening is a sign-extend,
/// a shift, a mask and a multiply by 2¹⁰² (<see cref="RebasedF16Loader"/>) — all on normal f32s, exactly. The scaled
/// value is a normal f32 for every f16 value from the smallest subnormal (2⁻²⁴ → 2⁻¹²⁶) up to |w| &lt; 128, so the
/// subnormals need no branch; zeros keep their sign; larger values, infinities and NaNs have no code (a matrix holding
/// one stays in plain f16 bits, read by <see cref="F16Loader"/>). Trained weights are far inside that range.
/// </summary>
/// <remarks>
/// Measured in one process on a 2-core Zen 4, single thread, a 768×3072 matrix in cache: plain f16 bits widened exactly
/// 17 GB/s (the weights of two such cores need 33 GB/s of memory), codes 34 GB/s, bf16 52 GB/s.
/// </remarks>
internal static unsafe class RebasedF16
{
    /// <summary>Codes hold w·2^-<see cref="Shift"/>.</summary>
    public const int Shift = 102;

    /// <summary>What scaling adds to an f16 exponent field (bias 15) to make the f32 one (bias 127): 127 − 15 − 102.</summary>
    private const int ExponentOffset = 127 - 15 - Shift;

    /// <summary>Largest f16 exponent field a code holds (its f32 field must fit in 5 bits): 21, so |w| &lt; 2⁷.</summary>
    private const int MaxExponent = 31 - ExponentOffset;

    /// <summary>
    /// The codes of a CPU f16 matrix as a new Int16 tensor of its shape, or null when a value has none (|w| ≥ 128,
    /// infinities, NaNs). The input is not disposed.
    /// </summary>
    public static Tensor? TryEncode(Tensor f16)
    {
        if (f16.dtype != ScalarType.Float16 || f16.device_type != DeviceType.CPU) return null;
        using var source = f16.contiguous();
        var codes = empty(f16.shape, ScalarType.Int16);
        if (TryEncode((ushort*)LinearWeights.DataPointerOf(source), (ushort*)LinearWeights.DataPointerOf(codes), source.NumberOfElements)) return codes;
        codes.Dispose();
        return null;
    }

    /// <summary>Codes of <paramref name="n"/> f16 bit patterns; false (codes partly written) when one has none.</summary>
    public static bool TryEncode(ushort* f16, ushort* codes, long n)
    {
        for (long i = 0; i < n; i++)
        {
            if (!TryEncode(f16[i], out ushort code)) return false;
            codes[i] = code;
        }
        return true;
    }

    /// <summary>The code of one f16 bit pattern; false when it has none (|w| ≥ 128, ±∞, NaN).</summary>
    public static bool TryEncode(ushort half, out ushort code)
    {
        int sign = half & 0x8000, exponent = (half >> 10) & 31, mantissa = half & 1023;
        code = 0;
        if (exponent > MaxExponent) return false;
        if (exponent != 0) // 2^(e−15)·1.m·2⁻¹⁰² has the f32 exponent field e − 15 − 102 + 127
        {
            code = (ushort)(sign | (exponent + ExponentOffset) << 10 | mantissa);
            return true;
        }
        if (mantissa == 0)
        {
            code = (ushort)sign;
            return true;
        }
        // m·2⁻²⁴ = 2^p·1.f·2⁻²⁴ with p = ⌊log₂ m⌋: scaled, the exponent field is p + 1 and the fraction m's bits below p.
        int p = BitOperations.Log2((uint)mantissa);
        code = (ushort)(sign | (p + 1) << 10 | (mantissa << (10 - p)) & 1023);
        return true;
    }

    /// <summary>Rows [start, start+count) of a code matrix [out, in] as a new f32 tensor (the caller owns it).</summary>
    public static Tensor Decode(Tensor codes, long start, long count)
    {
        long k = codes.shape[1], n = count * k;
        var y = empty([count, k], ScalarType.Float32);
        ushort* c = (ushort*)LinearWeights.DataPointerOf(codes) + start * k;
        float* o = (float*)LinearWeights.DataPointerOf(y);
        long i = 0;
        if (Avx2.IsSupported)
            for (; i + 8 <= n; i += 8) Avx.Store(o + i, RebasedF16Loader.Load8(c + i));
        for (; i < n; i++) o[i] = RebasedF16Loader.Load1(c + i);
        return y;
    }
}

/// <summary>
/// <see cref="RebasedF16"/> codes: sign-extended, shifted into f32 place with the sign's copies masked off (w·2⁻¹⁰², a
/// normal f32 or zero), then multiplied by 2¹⁰² — exact.
/// </summary>
internal readonly unsafe struct RebasedF16Loader : IWeightLoader<ushort>
{
    /// <summary>Sign and the low 28 bits: clears the sign's copies in bits 30..28 after the shift.</summary>
    internal const int Bits = unchecked((int)0x8FFFFFFF);
    /// <summary>2¹⁰² as f32 bits.</summary>
    internal const int ScaleBits = (127 + RebasedF16.Shift) << 23;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(ushort* p)
    {
        var scaled = Avx2.And(Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32((short*)p), 13), Vector256.Create(Bits));
        return Avx.Multiply(scaled.AsSingle(), Vector256.Create(ScaleBits).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load1(ushort* p) =>
        BitConverter.Int32BitsToSingle(((short)*p << 13) & Bits) * BitConverter.Int32BitsToSingle(ScaleBits);
}

/// <summary><see cref="RebasedF16"/> codes, 16 at a time (AVX-512), for the batched kernel <see cref="GemmKernels"/>.</summary>
internal readonly unsafe struct RebasedF16WideLoader : IWideWeightLoader<ushort>
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(ushort* p)
    {
        var codes = Avx512F.ConvertToVector512Int32(Avx.LoadVector256((short*)p));
        var scaled = Avx512F.And(Avx512F.ShiftLeftLogical(codes, 13), Vector512.Create(RebasedF16Loader.Bits));
        return Avx512F.Multiply(scaled.AsSingle(), Vector512.Create(RebasedF16Loader.ScaleBits).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load1(ushort* p) => RebasedF16Loader.Load1(p);
}
