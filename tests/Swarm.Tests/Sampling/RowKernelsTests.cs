using Swarm.Sampling;
using Xunit;
using static TorchSharp.torch;

namespace Swarm.Tests.Sampling;

/// <summary>
/// The managed row kernels against libtorch and against the rules they promise: the first largest entry and the top two
/// (ties by lowest index, vectors' edges and tails, −∞, NaN), and the projection of many rows against a libtorch matmul
/// across the kernel's blocks.
/// </summary>
public class RowKernelsTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(9)]
    [InlineData(50_304)]
    public void Argmax_RandomRows_MatchTorch(int n)
    {
        var gen = new Generator((ulong)n);
        for (int rep = 0; rep < 5; rep++)
        {
            using var row = randn(n, generator: gen);
            Assert.Equal(row.argmax().item<long>(), RowKernels.Argmax(row.data<float>().ToArray()));
        }
    }

    [Fact]
    public void Argmax_Ties_AllNegativeInfinity_AndNaN()
    {
        var values = new float[37];
        Array.Fill(values, -1f);
        values[20] = 3; values[9] = 3; values[30] = 3;
        Assert.Equal(9, RowKernels.Argmax(values));
        Assert.Equal(0, RowKernels.Argmax(Enumerable.Repeat(float.NegativeInfinity, 19).ToArray()));
        values[33] = float.NaN; // in the scalar tail
        Assert.Throws<InvalidOperationException>(() => RowKernels.Argmax(values));
        values[33] = 0; values[2] = float.NaN; // in a vector
        Assert.Throws<InvalidOperationException>(() => RowKernels.Argmax(values));
        Assert.Throws<ArgumentException>(() => RowKernels.Argmax([]));
    }

    [Theory]
    [InlineData(2)]
    [InlineData(16)]
    [InlineData(17)]
    [InlineData(1031)]
    [InlineData(50_304)]
    public void TopTwo_RandomRows_MatchTorchTopk(int n)
    {
        var gen = new Generator((ulong)(100 + n));
        for (int rep = 0; rep < 5; rep++)
        {
            using var row = randn(n, generator: gen);
            var (top, ids) = row.topk(2);
            var (best, runnerUp, margin) = RowKernels.TopTwo(row);
            Assert.Equal(ids[0].item<long>(), best);
            Assert.Equal(ids[1].item<long>(), runnerUp);
            Assert.Equal(top[0].item<float>() - top[1].item<float>(), margin);
        }
    }

    [Fact]
    public void TopTwo_ManyRowsAtOnce_MatchRowByRow()
    {
        using var scope = NewDisposeScope();
        var gen = new Generator(5);
        var rows = Enumerable.Range(0, 11).Select(i => i % 3 == 0 ? randn(1031, generator: gen).to_type(ScalarType.BFloat16) : randn(1031, generator: gen)).ToArray();
        var together = RowKernels.TopTwo(rows);
        Assert.Equal(rows.Length, together.Length);
        for (int i = 0; i < rows.Length; i++) Assert.Equal(RowKernels.TopTwo(rows[i]), together[i]);
    }

    [Fact]
    public void TopTwo_TiesTakeTheLowestIndices()
    {
        var values = new float[40];
        values[25] = 5; values[3] = 5; values[17] = 5;           // three-way tie for first
        Assert.Equal((3, 17, 0f), RowKernels.TopTwo(values));
        values[3] = 6;                                            // one best, a tie for second
        Assert.Equal((3, 17, 1f), RowKernels.TopTwo(values));
        values = new float[40];
        values[39] = 2; values[38] = 1;                          // both in the last vector
        Assert.Equal((39, 38, 1f), RowKernels.TopTwo(values));
        values[7] = 2;                                            // best in a vector, the tie in another
        Assert.Equal((7, 39, 0f), RowKernels.TopTwo(values));
    }

    [Fact]
    public void TopTwo_NaNRow_GivesNaNMargin_AndShortRowIsRefused()
    {
        var values = new float[20];
        values[11] = float.NaN;
        var (_, _, margin) = RowKernels.TopTwo(values);
        Assert.True(float.IsNaN(margin));
        Assert.Throws<ArgumentException>(() => RowKernels.TopTwo(new float[1]));
        using var scope = NewDisposeScope();
        Assert.Throws<ArgumentException>(() => RowKernels.TopTwo(Enumerable.Range(0, 9).Select(i => randn(i == 4 ? 1 : 5)).ToArray()));
    }

    [Theory]
    [InlineData(1, 768, 16)]
    [InlineData(5, 4099, 16)]   // two blocks, a tail of 3
    [InlineData(64, 50_304, 16)]
    [InlineData(3, 10, 8)]
    public void Project_MatchesLibtorchMatmul(int rows, int dim, int width)
    {
        using var scope = NewDisposeScope();
        var gen = new Generator((ulong)(rows * 7 + dim));
        var x = randn(rows, dim, generator: gen);
        var p = randn(dim, width, generator: gen) / MathF.Sqrt(dim);
        var expected = x.matmul(p).data<float>().ToArray();

        var fromMatrix = RowKernels.Project(x, p);
        var fromRows = RowKernels.Project(Enumerable.Range(0, rows).Select(r => x[r]).ToArray(), p);
        var fromBf16 = RowKernels.Project(x.to_type(ScalarType.BFloat16), p);
        var bf16Expected = x.to_type(ScalarType.BFloat16).to_type(ScalarType.Float32).matmul(p).data<float>().ToArray();

        Assert.Equal(expected.Length, fromMatrix.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.True(Math.Abs(expected[i] - fromMatrix[i]) <= 1e-4f * (1 + Math.Abs(expected[i])), $"[{i}] matrix {fromMatrix[i]} vs {expected[i]}");
            Assert.Equal(fromMatrix[i], fromRows[i]);
            Assert.True(Math.Abs(bf16Expected[i] - fromBf16[i]) <= 1e-4f * (1 + Math.Abs(bf16Expected[i])), $"[{i}] bf16 {fromBf16[i]} vs {bf16Expected[i]}");
        }
    }

    [Fact]
    public void Project_RefusesMismatchedShapes()
    {
        using var scope = NewDisposeScope();
        var p = randn(10, 16);
        Assert.Throws<ArgumentException>(() => RowKernels.Project([randn(9)], p));
        Assert.Throws<ArgumentException>(() => RowKernels.Project(randn(3, 7), p));
        Assert.Throws<ArgumentException>(() => RowKernels.Project(randn(2, 10), randn(10, 12)));
        Assert.Throws<ArgumentException>(() => RowKernels.Project(randn(2, 10), randn(10, 16).to_type(ScalarType.Float64)));
    }
}
