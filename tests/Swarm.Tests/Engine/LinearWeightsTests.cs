using Swarm.Model;
using Xunit;
using static TorchSharp.torch;

namespace Swarm.Tests.Engine;

/// <summary>
/// Every <see cref="WeightFormat"/>'s linear layer against an f32 matmul over the weight it actually stores (rounded to
/// bf16/f16, or dequantized from int8), so the kernels are checked to f32 rounding — at batch sizes that take the single-
/// row GEMV, the four-row GEMV with partial groups, and the GEMM path, with an input width that leaves a scalar tail.
/// </summary>
public class LinearWeightsTests
{
    public static TheoryData<WeightFormat, int, int> Cases()
    {
        var data = new TheoryData<WeightFormat, int, int>();
        foreach (var f in WeightFormats.All)
            foreach (int rows in new[] { 1, 2, 3, 5, 8, 13, 40 })
                foreach (int inputs in new[] { 96, 77 })
                    data.Add(f, rows, inputs);
        return data;
    }

    /// <summary>Many input rows over a matrix several L2 blocks tall: the cache-blocked GEMV (weight blocks × row groups).</summary>
    [Theory]
    [InlineData(WeightFormat.F32, 13)]
    [InlineData(WeightFormat.BF16, 40)]
    [InlineData(WeightFormat.Int8, 64)]
    public unsafe void Multiply_ManyRowsOverSeveralCacheBlocks_MatchesMatmul(WeightFormat format, int rows)
    {
        using var scope = NewDisposeScope();
        const int outputs = 3001, inputs = 203;
        Assert.True(GemvKernels.BlockRows(inputs, 1) < outputs / 2, "the matrix must span several cache blocks");
        var w = randn(outputs, inputs, generator: new Generator(4)) * 0.1f;
        var b = randn(outputs, generator: new Generator(5));
        var x = randn(rows, inputs, generator: new Generator(6));
        var expected = x.matmul(StoredAsF32(w, format).t()) + b;
        using var linear = LinearWeights.Create(w.clone(), b.clone(), format, parallelism: 2);
        var y = empty(rows, outputs);
        linear.Multiply((float*)LinearWeights.DataPointerOf(x), rows, (float*)LinearWeights.DataPointerOf(y));
        double err = (y - expected).abs().max().item<float>();
        Assert.True(err < 1e-4 * expected.abs().max().item<float>(), $"{format} rows {rows}: max |Δ| {err}");
    }

    /// <summary>
    /// int8 weights with the integer kernel (activations quantized to int16 per block of <see cref="Int8Kernels.Block"/>):
    /// rows several blocks long, ending in a partial vector, with one block of outliers 10⁴ times the size of the rest.
    /// The product matches the matmul over the dequantized weights to f32-kernel accuracy; and where the outliers meet
    /// zero weights, so the small blocks make the whole product, it still does — with one scale per row their values
    /// would be about one int16 step each.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(9)]
    public unsafe void Int8_BlocksOfVeryDifferentSize_EachKeepsItsPrecision(int rows)
    {
        using var scope = NewDisposeScope();
        const int outputs = 300, inputs = 3 * Int8Kernels.Block + 45;
        var x = randn(rows, inputs, generator: new Generator(8)) * 1e-2f;
        x.narrow(1, Int8Kernels.Block, Int8Kernels.Block).mul_(1e4f);
        var w = randn(outputs, inputs, generator: new Generator(7)) * 0.1f;
        var blind = w.clone();
        blind.narrow(1, Int8Kernels.Block, Int8Kernels.Block).zero_(); // the outliers' weights
        foreach (var (weights, name) in new[] { (w, "all weights"), (blind, "outliers on zero weights") })
        {
            var expected = x.matmul(Dequantized(weights).t());
            using var linear = LinearWeights.Create(weights.clone(), null, WeightFormat.Int8, parallelism: 2);
            var y = empty(rows, outputs);
            linear.Multiply((float*)LinearWeights.DataPointerOf(x), rows, (float*)LinearWeights.DataPointerOf(y));
            double err = (y - expected).abs().max().item<float>();
            Assert.True(err < 1e-4 * expected.abs().max().item<float>(), $"rows {rows}, {name}: max |Δ| {err} of {expected.abs().max().item<float>()}");
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Forward_F32Activations_MatchesMatmulOverStoredWeights(WeightFormat format, int rows, int inputs)
    {
        using var scope = NewDisposeScope();
        var w = randn(600, inputs, generator: new Generator(1)) * 0.1f;
        var b = randn(600, generator: new Generator(2));
        var x = randn(rows, inputs, generator: new Generator(3));
        var stored = StoredAsF32(w, format);
        var expected = x.matmul(stored.t()) + b;
        using var linear = LinearWeights.Create(w.clone(), b.clone(), format, parallelism: 2);
        Assert.Equal(format, linear.Format);
        var y = linear.Forward(x);
        Assert.Equal(ScalarType.Float32, y.dtype);
        Assert.Equal(expected.shape, y.shape);
        double err = (y - expected).abs().max().item<float>();
        Assert.True(err < 1e-4 * expected.abs().max().item<float>(), $"{format} rows {rows} in {inputs}: max |Δ| {err}");
    }

    [Theory]
    [InlineData(WeightFormat.BF16)]
    [InlineData(WeightFormat.F16)]
    [InlineData(WeightFormat.Int8)]
    public void Forward_Bf16Activations_ReturnsBf16_CloseToF32Product(WeightFormat format)
    {
        using var scope = NewDisposeScope();
        var w = randn(512, 128, generator: new Generator(4)) * 0.1f;
        var x = randn(3, 128, generator: new Generator(5));
        var expected = x.to_type(ScalarType.BFloat16).to_type(ScalarType.Float32).matmul(StoredAsF32(w, format).t());
        using var linear = LinearWeights.Create(w.clone(), null, format, parallelism: 1);
        var y = linear.Forward(x.to_type(ScalarType.BFloat16));
        Assert.Equal(ScalarType.BFloat16, y.dtype);
        // Only the output's rounding to bf16 (2⁻⁹ relative) separates them: the product accumulates in f32.
        double err = (y.to_type(ScalarType.Float32) - expected).abs().max().item<float>();
        Assert.True(err <= 0.004 * expected.abs().max().item<float>(), $"{format}: max |Δ| {err}");
        var f32 = linear.Forward(x.to_type(ScalarType.BFloat16), ScalarType.Float32);
        Assert.Equal(ScalarType.Float32, f32.dtype);
        Assert.True((f32 - expected).abs().max().item<float>() < 1e-4 * expected.abs().max().item<float>());
    }

    [Fact]
    public void Bytes_CountWhatIsStored()
    {
        using var scope = NewDisposeScope();
        var w = randn(300, 64);
        var b = randn(300);
        using var f32 = LinearWeights.Create(w.clone(), b.clone(), WeightFormat.F32, 1);
        using var bf16 = LinearWeights.Create(w.clone(), b.clone(), WeightFormat.BF16, 1);
        using var f16 = LinearWeights.Create(w.clone(), b.clone(), WeightFormat.F16, 1);
        using var int8 = LinearWeights.Create(w.clone(), b.clone(), WeightFormat.Int8, 1);
        long bias = 300 * 4;
        Assert.Equal(300 * 64 * 4 + bias, f32.Bytes);
        Assert.Equal(300 * 64 * 2 + bias, bf16.Bytes);
        Assert.Equal(300 * 64 * 2 + bias, f16.Bytes);
        Assert.Equal(300 * 64 * 1 + bias + 300 * 4, int8.Bytes); // plus one f32 scale per row
    }

    [Fact]
    public void Int8Quantizer_PerRowScales_ErrorAtMostHalfAStep_ZeroRowStaysZero()
    {
        using var scope = NewDisposeScope();
        var w = randn(64, 200, generator: new Generator(6)) * linspace(0.01, 3, 64).unsqueeze(1); // rows of very different size
        w[5] = zeros(200);
        var (q, s) = Int8Quantizer.Quantize(w);
        Assert.Equal(ScalarType.Int8, q.dtype);
        Assert.Equal(new long[] { 64 }, s.shape);
        Assert.True(q.abs().max().item<sbyte>() <= 127);
        var err = (w - q.to_type(ScalarType.Float32) * s.unsqueeze(1)).abs().amax([1]);
        Assert.True((err <= s * 0.5001f).all().item<bool>(), "some weight is off by more than half its row's step");
        Assert.Equal(0, q[5].abs().sum().item<long>());
        // The largest |w| of each row maps to ±127: the whole int8 range is used per row.
        Assert.True((q.to_type(ScalarType.Int32).abs().amax([1]).narrow(0, 0, 5) == 127).all().item<bool>());
    }

    /// <summary>The weight as the format stores it, in f32.</summary>
    private static Tensor StoredAsF32(Tensor w, WeightFormat format) => format switch
    {
        WeightFormat.F32 => w,
        WeightFormat.BF16 => w.to_type(ScalarType.BFloat16).to_type(ScalarType.Float32),
        WeightFormat.F16 => w.to_type(ScalarType.Float16).to_type(ScalarType.Float32),
        _ => Dequantized(w),
    };

    private static Tensor Dequantized(Tensor w)
    {
        var (q, s) = Int8Quantizer.Quantize(w);
        return q.to_type(ScalarType.Float32) * s.unsqueeze(1);
    }
}
