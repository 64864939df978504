using Swarm.Sampling;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Swarm.Tests.Sampling;

public class SamplerTests
{
    private static Tensor RandomLogits(int vocab, long seed, double scale = 3.0)
    {
        using var g = new Generator((ulong)seed, CPU);
        using var r = randn(vocab, generator: g);
        return r * scale;
    }

    private static Tensor Logits(params float[] values) => tensor(values);

    private static int[] Run(Sampler s, Tensor logits, int steps) => Enumerable.Range(0, steps).Select(_ => s.Next(logits)).ToArray();

    [Fact]
    public void Greedy_ReturnsArgmax()
    {
        for (int seed = 0; seed < 20; seed++)
        {
            using var logits = RandomLogits(1000, seed);
            var values = logits.data<float>().ToArray();
            int expected = Array.IndexOf(values, values.Max());
            Assert.Equal(expected, new Sampler(SamplingOptions.Greedy()).Next(logits));
        }
    }

    [Fact]
    public void Greedy_Ties_GoToLowestIndex()
    {
        using var logits = Logits(1f, 5f, 2f, 5f, 5f);
        Assert.Equal(1, new Sampler(SamplingOptions.Greedy()).Next(logits));
    }

    [Fact]
    public void Greedy_AcceptsBatchOfOneAndHalfPrecision()
    {
        using var logits = Logits(0f, 1f, 9f, 3f);
        using var row2d = logits.unsqueeze(0);
        using var half = logits.to(ScalarType.BFloat16);
        var s = new Sampler(SamplingOptions.Greedy());
        Assert.Equal(2, s.Next(row2d));
        Assert.Equal(2, s.Next(half));
    }

    [Fact]
    public void Next_WrongShapeOrNaN_ClearError()
    {
        var s = new Sampler(new SamplingOptions { Temperature = 1, Seed = 1 });
        using var two = zeros(2, 5);
        var e = Assert.Throws<ArgumentException>(() => s.Next(two));
        Assert.Contains("[2, 5]", e.Message);
        using var nan = Logits(0f, float.NaN, 1f);
        Assert.Contains("NaN", Assert.Throws<InvalidOperationException>(() => s.Next(nan)).Message);
        Assert.Contains("NaN", Assert.Throws<InvalidOperationException>(() => new Sampler(SamplingOptions.Greedy()).Next(nan)).Message);
        using var nanOutsideTopK = Logits(5f, 4f, float.NaN, 1f);
        Assert.Contains("NaN", Assert.Throws<InvalidOperationException>(() => new Sampler(new SamplingOptions { Temperature = 1, TopK = 1 }).Next(nanOutsideTopK)).Message);
        using var ninf = Logits(float.NegativeInfinity, float.NegativeInfinity);
        Assert.Contains("-inf", Assert.Throws<InvalidOperationException>(() => s.Next(ninf)).Message);
        using var ints = zeros(new long[] { 4 }, ScalarType.Int64);
        Assert.Throws<ArgumentException>(() => s.Next(ints));
    }

    [Fact]
    public void SameSeed_SameSequence()
    {
        using var logits = RandomLogits(500, 3, scale: 1.0);
        var opts = new SamplingOptions { Temperature = 1.0, TopK = 50, TopP = 0.95, Seed = 42 };
        var a = Run(new Sampler(opts), logits, 64);
        var b = Run(new Sampler(opts), logits, 64);
        Assert.Equal(a, b);
        Assert.True(a.Distinct().Count() > 5, "a flat distribution should give varied tokens");
    }

    [Fact]
    public void DifferentSeeds_Differ()
    {
        using var logits = RandomLogits(500, 3, scale: 1.0);
        var a = Run(new Sampler(new SamplingOptions { Temperature = 1.0, Seed = 1 }), logits, 32);
        var b = Run(new Sampler(new SamplingOptions { Temperature = 1.0, Seed = 2 }), logits, 32);
        Assert.NotEqual(a, b);
    }

    [Fact]
    public void RecreatedAtStep_ContinuesTheSameStream()
    {
        using var logits = RandomLogits(300, 5, scale: 1.0);
        var opts = new SamplingOptions { Temperature = 0.8, TopP = 0.9, Seed = 7 };
        var full = Run(new Sampler(opts), logits, 40);
        var moved = new Sampler(opts, step: 25);
        Assert.Equal(25, moved.Step);
        Assert.Equal(full[25..], Run(moved, logits, 15));
    }

    [Fact]
    public void NullSeed_PicksOneThatReplays()
    {
        using var logits = RandomLogits(300, 6, scale: 1.0);
        var first = new Sampler(new SamplingOptions { Temperature = 1 });
        var a = Run(first, logits, 20);
        var replay = new Sampler(new SamplingOptions { Temperature = 1, Seed = first.Seed });
        Assert.Equal(a, Run(replay, logits, 20));
    }

    [Fact]
    public void Uniform_GoldenValues_AreStable()
    {
        // Pinned (computed by an independent Python implementation of the documented formula):
        // nodes running different builds must draw the same numbers for a migrated job.
        Assert.Equal(0.36328392856958625, Sampler.Uniform(0, 0));
        Assert.Equal(0.10940420366359382, Sampler.Uniform(42, 7));
        Assert.Equal(0.17547434020401098, Sampler.Uniform(-1, 1000));
        var values = Enumerable.Range(0, 10_000).Select(k => Sampler.Uniform(123, k)).ToArray();
        Assert.All(values, v => Assert.True(v >= 0 && v < 1));
        Assert.InRange(values.Average(), 0.49, 0.51);
        Assert.Equal(values.Length, values.Distinct().Count());
        Assert.NotEqual(Sampler.Uniform(1, 0), Sampler.Uniform(2, 0));
    }

    [Fact]
    public void TopK1_EqualsGreedy()
    {
        for (int seed = 0; seed < 10; seed++)
        {
            using var logits = RandomLogits(2000, 100 + seed);
            int greedy = new Sampler(SamplingOptions.Greedy()).Next(logits);
            var s = new Sampler(new SamplingOptions { Temperature = 2.0, TopK = 1, Seed = seed });
            Assert.All(Run(s, logits, 20), t => Assert.Equal(greedy, t));
        }
    }

    [Fact]
    public void TopPTiny_EqualsGreedy()
    {
        for (int seed = 0; seed < 10; seed++)
        {
            using var logits = RandomLogits(2000, 200 + seed);
            int greedy = new Sampler(SamplingOptions.Greedy()).Next(logits);
            var s = new Sampler(new SamplingOptions { Temperature = 1.5, TopP = 1e-6, Seed = seed });
            Assert.All(Run(s, logits, 20), t => Assert.Equal(greedy, t));
        }
    }

    [Theory]
    [InlineData(1e-50, 0)]
    [InlineData(double.Epsilon, 0)]
    [InlineData(1e-50, 50)]
    [InlineData(double.Epsilon, 50)]
    public void TopPFarBelowFloatRange_SamplesTheArgmax(double topP, int topK)
    {
        // Such a top-p used to become 0 in float32 on the wire; as a double, a nucleus mass that underflows to 0 still keeps the best token.
        for (int seed = 0; seed < 5; seed++)
        {
            using var logits = RandomLogits(2000, 300 + seed);
            int greedy = new Sampler(SamplingOptions.Greedy()).Next(logits);
            var s = new Sampler(new SamplingOptions { Temperature = 1.0, TopK = topK, TopP = topP, Seed = seed });
            Assert.All(Run(s, logits, 20), t => Assert.Equal(greedy, t));
        }
    }

    [Fact]
    public void Nucleus_MassUnderflowedToZero_KeepsOnlyTheLargestWeight()
    {
        double[] w = [0.1, 0.5, 0.2, 0.5, 0.05];
        Sampler.Nucleus(w, 0.0);
        Assert.Equal([0.0, 0.5, 0.0, 0.0, 0.0], w);
    }

    [Theory]
    [InlineData(1e-300)]
    [InlineData(double.Epsilon)]
    public void TemperatureTiny_BehavesLikeGreedy(double temperature)
    {
        for (int seed = 0; seed < 5; seed++)
        {
            using var logits = RandomLogits(2000, 400 + seed);
            int greedy = new Sampler(SamplingOptions.Greedy()).Next(logits);
            var s = new Sampler(new SamplingOptions { Temperature = temperature, Seed = seed });
            Assert.All(Run(s, logits, 20), t => Assert.Equal(greedy, t));
        }
    }

    [Fact]
    public void TopK_RestrictsSupportToTheKBest()
    {
        using var logits = RandomLogits(1000, 9, scale: 0.5);
        var values = logits.data<float>().ToArray();
        var top5 = values.Select((v, i) => (v, i)).OrderByDescending(p => p.v).Take(5).Select(p => p.i).ToHashSet();
        var s = new Sampler(new SamplingOptions { Temperature = 1.0, TopK = 5, Seed = 11 });
        var draws = Run(s, logits, 2000);
        Assert.All(draws, t => Assert.Contains(t, top5));
        Assert.Equal(top5, draws.ToHashSet()); // and every one of them is reachable
    }

    [Fact]
    public void TopP_KeepsTheSmallestNucleus()
    {
        // Probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1.
        using var logits = Logits(MathF.Log(0.15f), MathF.Log(0.5f), MathF.Log(0.05f), MathF.Log(0.3f));
        var at80 = Run(new Sampler(new SamplingOptions { Temperature = 1, TopP = 0.79, Seed = 3 }), logits, 2000).ToHashSet();
        Assert.Equal(new HashSet<int> { 1, 3 }, at80);
        var at90 = Run(new Sampler(new SamplingOptions { Temperature = 1, TopP = 0.9, Seed = 3 }), logits, 2000).ToHashSet();
        Assert.Equal(new HashSet<int> { 0, 1, 3 }, at90);
    }

    [Fact]
    public void Nucleus_Quickselect_EqualsSortedPrefixDefinition()
    {
        var rng = new Random(1234);
        for (int trial = 0; trial < 300; trial++)
        {
            int n = rng.Next(1, 400);
            // Coarse values make ties common; a few zeros as from -inf logits.
            var w = Enumerable.Range(0, n).Select(_ => rng.Next(4) == 0 ? 0.0 : Math.Round(rng.NextDouble() * 8) / 8 + (trial % 2) * rng.NextDouble()).ToArray();
            if (w.All(x => x == 0)) w[0] = 1;
            double p = new[] { 1e-9, 0.1, 0.5, 0.9, 0.999, 1.0 }[trial % 6];
            double need = p * w.Sum();
            // Reference: sort by (weight desc, id asc), keep the smallest prefix reaching the mass.
            var order = Enumerable.Range(0, n).Where(i => w[i] > 0).OrderByDescending(i => w[i]).ThenBy(i => i).ToList();
            var expected = new HashSet<int>();
            double cum = 0;
            foreach (int i in order)
            {
                expected.Add(i);
                cum += w[i];
                if (cum >= need) break;
            }
            var kept = (double[])w.Clone();
            Sampler.Nucleus(kept, need);
            var actual = Enumerable.Range(0, n).Where(i => kept[i] > 0).ToHashSet();
            Assert.True(expected.SetEquals(actual), $"trial {trial}: p={p}, expected {expected.Count} tokens, got {actual.Count}");
            Assert.All(actual, i => Assert.Equal(w[i], kept[i]));
        }
    }

    [Fact]
    public void RowWithStorageOffset_ReadsItsOwnValues()
    {
        using var batch = tensor(new float[] { 9, 0, 0, 0, 0, 0, 7, 0, 0 }).reshape(3, 3);
        using var second = batch.narrow(0, 1, 1); // [1, 3] view starting at element 3
        Assert.Equal(0, new Sampler(SamplingOptions.Greedy()).Next(second));
        using var third = batch.narrow(0, 2, 1);
        Assert.Equal(0, new Sampler(SamplingOptions.Greedy()).Next(third));
        using var column = batch.select(1, 0); // [9, 0, 7] strided
        Assert.Equal(0, new Sampler(SamplingOptions.Greedy()).Next(column));
        using var shifted = tensor(new float[] { 1, 5, 2, 8 }).narrow(0, 1, 3); // [5, 2, 8]
        Assert.Equal(2, new Sampler(SamplingOptions.Greedy()).Next(shifted));
        Assert.Equal(2, new Sampler(new SamplingOptions { Temperature = 0.01, Seed = 1 }).Next(shifted));
    }

    [Fact]
    public void Temperature1_FrequenciesMatchSoftmax()
    {
        using var logits = Logits(MathF.Log(0.6f), MathF.Log(0.3f), MathF.Log(0.1f));
        var draws = Run(new Sampler(new SamplingOptions { Temperature = 1, Seed = 5 }), logits, 20_000);
        double[] expected = [0.6, 0.3, 0.1];
        for (int t = 0; t < 3; t++)
        {
            double f = draws.Count(d => d == t) / (double)draws.Length;
            Assert.InRange(f, expected[t] - 0.015, expected[t] + 0.015); // > 4 sigma at n = 20000
        }
    }

    [Theory]
    [InlineData(0.5)]
    [InlineData(2.0)]
    public void Temperature_ScalesLogits_FrequenciesMatchSoftmaxOfLogitsOverT(double temperature)
    {
        double[] p = [0.6, 0.3, 0.1];
        using var logits = Logits(p.Select(x => (float)Math.Log(x)).ToArray());
        var draws = Run(new Sampler(new SamplingOptions { Temperature = temperature, Seed = 8 }), logits, 20_000);
        var w = p.Select(x => Math.Pow(x, 1 / temperature)).ToArray();
        for (int t = 0; t < 3; t++)
        {
            double f = draws.Count(d => d == t) / (double)draws.Length;
            Assert.InRange(f, w[t] / w.Sum() - 0.015, w[t] / w.Sum() + 0.015);
        }
    }

    [Fact]
    public void LowerTemperature_SharpensTheDistribution()
    {
        using var logits = RandomLogits(200, 12, scale: 1.0);
        int best = new Sampler(SamplingOptions.Greedy()).Next(logits);
        double Share(double temperature)
        {
            var draws = Run(new Sampler(new SamplingOptions { Temperature = temperature, Seed = 99 }), logits, 4000);
            return draws.Count(d => d == best) / (double)draws.Length;
        }
        double colder = Share(0.1), cold = Share(0.25), normal = Share(1.0), hot = Share(4.0);
        Assert.True(colder > cold && cold > normal && normal > hot,
            $"argmax share should fall with temperature: T=0.1 {colder}, T=0.25 {cold}, T=1 {normal}, T=4 {hot}");
    }

    [Fact]
    public void IsStop_MatchesStopIds()
    {
        var s = new Sampler(new SamplingOptions { StopTokenIds = [0, 50256] });
        Assert.True(s.IsStop(0));
        Assert.True(s.IsStop(50256));
        Assert.False(s.IsStop(1));
    }

    [Fact]
    public void InvalidOptions_AllErrorsReported()
    {
        var bad = new SamplingOptions { Temperature = -1, TopK = -2, TopP = 1.5, MaxNewTokens = 0, StopTokenIds = [3, -4] };
        var errors = bad.Validate();
        Assert.Equal(5, errors.Count);
        Assert.Contains(errors, e => e.Contains("temperature") && e.Contains("-1"));
        Assert.Contains(errors, e => e.Contains("top-k") && e.Contains("-2"));
        Assert.Contains(errors, e => e.Contains("top-p") && e.Contains("1.5"));
        Assert.Contains(errors, e => e.Contains("max-new-tokens"));
        Assert.Contains(errors, e => e.Contains("stop token") && e.Contains("-4"));
        var ex = Assert.Throws<ArgumentException>(() => new Sampler(bad));
        Assert.Contains("top-p", ex.Message);
        Assert.Contains("temperature", ex.Message);
        Assert.Single(new SamplingOptions { TopP = 0 }.Validate());
        Assert.Single(new SamplingOptions { Temperature = double.NaN }.Validate());
        Assert.Empty(new SamplingOptions().Validate());
    }

    [Fact]
    public void Next_LeavesNoLiveTensors()
    {
        using var logits = RandomLogits(5000, 13);
        var samplers = new[]
        {
            new Sampler(SamplingOptions.Greedy()),
            new Sampler(new SamplingOptions { Temperature = 1, Seed = 1 }),
            new Sampler(new SamplingOptions { Temperature = 1, TopK = 10, Seed = 1 }),
            new Sampler(new SamplingOptions { Temperature = 1, TopP = 0.5, Seed = 1 }),
        };
        foreach (var s in samplers) s.Next(logits); // warm-up
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 50; i++) foreach (var s in samplers) s.Next(logits);
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }
}
