using Swarm.Model;
using Xunit;

namespace Swarm.Tests.Engine;

/// <summary>
/// The register-tiled kernel of batched decode (<see cref="GemmKernels"/>) against a scalar reference in double, for every
/// stored weight type (f16 both plain and as <see cref="RebasedF16"/> codes): sizes that leave partial tiles of input rows and weight rows, k-block tails of every length, rows
/// cut into several k-blocks, a sub-range of output rows, an output stride wider than the matrix, scales and bias.
/// Outputs outside the asked rows must stay untouched.
/// </summary>
public unsafe class GemmKernelsTests
{
    public static TheoryData<string, int, int, int, int, int, bool> Cases()
    {
        var data = new TheoryData<string, int, int, int, int, int, bool>();
        foreach (var format in new[] { "f32", "bf16", "f16", "f16-rebased", "int8" })
        {
            data.Add(format, 5, 7, 1, 0, 7, false);                          // k shorter than a vector
            data.Add(format, 7, 9, 15, 1, 8, true);                          // 4+3 input rows, 4+3 weight rows, tail only
            data.Add(format, 13, 37, 33, 3, 36, true);                       // partial tiles both ways, 16+16+1
            data.Add(format, 6, 21, GemmKernels.KBlock + 6, 0, 21, false);   // two k-blocks, the last with a tail
            data.Add(format, 9, 13, 2 * GemmKernels.KBlock + 37, 2, 13, true); // three k-blocks
            data.Add(format, 64, 40, 768, 0, 40, true);                      // a decode batch of pythia-160m's width
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Run_OddSizes_MatchesScalarReference(string format, int rows, int outputs, int k, int r0, int r1, bool scaled)
    {
        var rng = new Random(rows * 1000 + outputs * 10 + k);
        var x = new float[rows * k];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        var stored = new float[outputs * k]; // each weight as the kernel must read it
        var f32 = new float[stored.Length];
        var half = new ushort[stored.Length];
        var int8 = new sbyte[stored.Length];
        for (int i = 0; i < stored.Length; i++)
        {
            float v = (float)(rng.NextDouble() * 2 - 1) * 0.5f;
            switch (format)
            {
                case "f32": stored[i] = f32[i] = v; break;
                case "bf16": half[i] = DecodeKernels.F32ToBf16(v); stored[i] = DecodeKernels.Bf16ToF32(half[i]); break;
                case "f16": half[i] = BitConverter.HalfToUInt16Bits((Half)v); stored[i] = (float)(Half)v; break;
                case "f16-rebased":
                    Assert.True(RebasedF16.TryEncode(BitConverter.HalfToUInt16Bits((Half)v), out half[i]));
                    stored[i] = (float)(Half)v;
                    break;
                default: int8[i] = (sbyte)rng.Next(-127, 128); stored[i] = int8[i]; break;
            }
        }
        float[]? scales = scaled ? Enumerable.Range(0, outputs).Select(_ => (float)rng.NextDouble() + 0.5f).ToArray() : null;
        float[]? bias = scaled ? Enumerable.Range(0, outputs).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray() : null;
        int ldy = outputs + 3;
        var y = Enumerable.Repeat(float.NaN, rows * ldy).ToArray();

        bool ran;
        fixed (float* xp = x, wf = f32, yp = y, sp = scales, bp = bias)
        fixed (ushort* wh = half)
        fixed (sbyte* wi = int8)
            ran = format switch
            {
                "f32" => GemmKernels.TryRun<float, F32Loader>(xp, rows, wf, k, r0, r1, sp, bp, yp, ldy),
                "bf16" => GemmKernels.TryRun<ushort, Bf16Loader>(xp, rows, wh, k, r0, r1, sp, bp, yp, ldy),
                "f16" => GemmKernels.TryRun<ushort, F16Loader>(xp, rows, wh, k, r0, r1, sp, bp, yp, ldy),
                "f16-rebased" => GemmKernels.TryRun<ushort, RebasedF16Loader>(xp, rows, wh, k, r0, r1, sp, bp, yp, ldy),
                _ => GemmKernels.TryRun<sbyte, Int8Loader>(xp, rows, wi, k, r0, r1, sp, bp, yp, ldy),
            };
        Assert.Equal(GemmKernels.IsSupported, ran);
        if (!ran) return; // no AVX-512: callers keep the GEMV kernels, checked by LinearWeightsTests

        for (int b = 0; b < rows; b++)
            for (int c = 0; c < ldy; c++)
            {
                float got = y[b * ldy + c];
                if (c < r0 || c >= r1)
                {
                    Assert.True(float.IsNaN(got), $"{format}: row {b} output {c} lies outside [{r0}, {r1}) but was written");
                    continue;
                }
                double dot = 0, magnitude = 0;
                for (int i = 0; i < k; i++)
                {
                    dot += (double)x[b * k + i] * stored[c * k + i];
                    magnitude += Math.Abs((double)x[b * k + i] * stored[c * k + i]);
                }
                double scale = scales?[c] ?? 1;
                double expected = dot * scale + (bias?[c] ?? 0);
                double tolerance = 1e-5 * magnitude * scale + 1e-6;
                Assert.True(Math.Abs(got - expected) <= tolerance,
                    $"{format} rows {rows} k {k}: y[{b}, {c}] = {got}, expected {expected} (tolerance {tolerance})");
            }
    }
}
