using System.Runtime.Intrinsics;
using Swarm.Model;
using Xunit;
using static TorchSharp.torch;

namespace Swarm.Tests.Engine;

/// <summary>
/// The two ways the GEMV widens f16 weights — plain f16 bits (<see cref="F16Loader"/>) and <see cref="RebasedF16"/> codes —
/// against .NET's own <c>(float)Half</c> over every one of the 65,536 bit patterns, vector and scalar paths; and f16
/// layers holding subnormals or values without a code against a matmul over the same weights.
/// </summary>
public unsafe class F16WideningTests
{
    private static float Reference(int bits) => (float)BitConverter.UInt16BitsToHalf((ushort)bits);

    private static ushort[] AllPatterns() => Enumerable.Range(0, 65536).Select(i => (ushort)i).ToArray();

    /// <summary>
    /// Every finite pattern (normals, subnormals, ±0) and ±∞ widen to the same f32 bits as <c>(float)Half</c>. NaNs stay
    /// NaNs of the same sign and payload; only the quiet bit differs (.NET sets it, the kernel keeps a signalling NaN
    /// signalling) — a NaN weight poisons the dot product either way.
    /// </summary>
    [Fact]
    public void F16Loader_EveryBitPattern_WidensAsHalfToSingle()
    {
        Assert.True(GemvKernels.IsSupported, "the kernels need AVX2 and FMA");
        var patterns = AllPatterns();
        var vector = new float[65536];
        fixed (ushort* p = patterns)
        {
            for (int i = 0; i < 65536; i += 8) F16Loader.Load8(p + i).CopyTo(vector.AsSpan(i));
            for (int i = 0; i < 65536; i++)
            {
                float expected = Reference(i), scalar = F16Loader.Load1(p + i);
                Assert.Equal(BitConverter.SingleToInt32Bits(expected), BitConverter.SingleToInt32Bits(scalar));
                if (float.IsNaN(expected))
                {
                    Assert.True(float.IsNaN(vector[i]), $"0x{i:x4} gave {vector[i]}");
                    Assert.Equal(BitConverter.SingleToInt32Bits(expected) | 0x400000, BitConverter.SingleToInt32Bits(vector[i]) | 0x400000);
                }
                else Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(vector[i]),
                    $"0x{i:x4}: {vector[i]} instead of {expected}");
            }
        }
    }

    /// <summary>
    /// Exactly the finite values below 128 in magnitude have a code (2 × 21 × 1024 normals, the subnormals and ±0), and each
    /// code widens — vector and scalar — to the same f32 bits as <c>(float)Half</c> of the value it encodes.
    /// </summary>
    [Fact]
    public void RebasedF16_EveryBitPattern_EncodesIffBelow128_AndWidensBackExactly()
    {
        Assert.True(GemvKernels.IsSupported, "the kernels need AVX2 and FMA");
        var codes = new ushort[65536];
        var encodable = new bool[65536];
        for (int i = 0; i < 65536; i++)
        {
            float value = Reference(i);
            encodable[i] = RebasedF16.TryEncode((ushort)i, out codes[i]);
            Assert.True(encodable[i] == (float.IsFinite(value) && MathF.Abs(value) < 128), $"0x{i:x4} ({value}): encodable {encodable[i]}");
        }
        Assert.Equal(2 * (21 * 1024 + 1024), encodable.Count(e => e));
        var vector = new float[65536];
        fixed (ushort* c = codes)
        {
            for (int i = 0; i < 65536; i += 8) RebasedF16Loader.Load8(c + i).CopyTo(vector.AsSpan(i));
            for (int i = 0; i < 65536; i++)
            {
                if (!encodable[i]) continue;
                int expected = BitConverter.SingleToInt32Bits(Reference(i));
                Assert.True(expected == BitConverter.SingleToInt32Bits(vector[i]), $"0x{i:x4}: {vector[i]} instead of {Reference(i)}");
                Assert.Equal(expected, BitConverter.SingleToInt32Bits(RebasedF16Loader.Load1(c + i)));
            }
        }
    }

    /// <summary>
    /// An f16 layer of small weights (a third of them f16 subnormals) is kept as codes; one holding a value of 200 keeps its
    /// plain f16 bits. Both, through the GEMV (1 and 3 rows) and the GEMM path (40 rows, weights decoded block by block),
    /// match an f32 matmul over the stored f16 values.
    /// </summary>
    [Theory]
    [InlineData(false, 1)]
    [InlineData(false, 3)]
    [InlineData(false, 40)]
    [InlineData(true, 1)]
    [InlineData(true, 40)]
    public void HalfLinear_F16_SubnormalsAndValuesWithoutCode_MatchMatmul(bool large, int rows)
    {
        using var scope = NewDisposeScope();
        var w = randn(301, 77, generator: new Generator(11)) * 1e-4f; // σ 1e-4: |w| < 6.1e-5 (subnormal) for ~45 %
        if (large) w[7, 3] = tensor(200f);
        var stored = w.to_type(ScalarType.Float16);
        var fp = stored.to_type(ScalarType.Float32);
        Assert.True((fp.abs() < 6.1e-5f).logical_and(fp != 0).to_type(ScalarType.Float32).mean().item<float>() > 0.3f, "subnormals");
        var x = randn(rows, 77, generator: new Generator(12));
        var expected = x.matmul(fp.t());
        using var linear = (HalfLinear)LinearWeights.Create(stored.clone(), null, WeightFormat.F16, parallelism: 2);
        Assert.Equal(!large, linear.IsRebased);
        Assert.Equal(301L * 77 * 2, linear.Bytes);
        var y = linear.Forward(x);
        double err = (y - expected).abs().max().item<float>();
        Assert.True(err < 1e-4 * expected.abs().max().item<float>(), $"rows {rows}: max |Δ| {err}");
    }
}
