using Swarm.Checkpoints;
using Swarm.Cli;
using Swarm.Model;
using Swarm.Node;
using Swarm.Node.Drafting;
using Swarm.Protocol;
using Swarm.Sampling;
using Swarm.Tests.Model;
using Swarm.Tokenization;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Swarm.Tests.Sampling;

/// <summary>
/// The last stage's acceptance rule (<see cref="SpeculativeAcceptance"/>): greedy keeps exactly the drafted prefix plain
/// greedy decoding would produce; sampling keeps the target's distribution whatever the draft — checked with 2,000 seeded
/// draws on real logits (codelm-tiny on Python) against a chi-square test — and decides the same when replayed.
/// </summary>
public class SpeculativeAcceptanceTests(ITestOutputHelper output)
{
    private const int Draws = 2000;

    private static Tensor Rows(params float[][] rows) => stack(rows.Select(r => tensor(r)).ToArray());

    [Fact]
    public void Greedy_KeepsTheDraftWhileItIsTheArgmax_ThenAddsTheTargetsToken()
    {
        using var scope = NewDisposeScope();
        // Argmax per row: 2, 3, 0, 4.
        var logits = Rows([0, 1, 5, 2, 0], [0, 1, 2, 6, 0], [9, 1, 2, 3, 0], [0, 1, 2, 3, 8]);
        var greedy = new SamplingOptions { Temperature = 0 };

        Assert.Equal([2, 3, 0], SpeculativeAcceptance.Accept(logits, [2, 3, 1], greedy, 0));      // third draft rejected
        Assert.Equal([2, 3, 0, 4], SpeculativeAcceptance.Accept(logits, [2, 3, 0], greedy, 0));   // all kept + one more
        Assert.Equal([2], SpeculativeAcceptance.Accept(logits, [1, 3, 0], greedy, 0));            // first rejected
        Assert.Equal([2], SpeculativeAcceptance.Accept(logits.narrow(0, 0, 1), [], greedy, 0));   // no draft: plain greedy
        Assert.Throws<ArgumentException>(() => SpeculativeAcceptance.Accept(logits, [2], greedy, 0)); // rows ≠ draft + 1
    }

    /// <summary>codelm-tiny's f32 logits [V] after a Python prefix: a real, peaked-but-spread next-token distribution.</summary>
    private static Tensor CodeLogits(string text)
    {
        string dir = BuiltInModels.CodeLmTiny;
        var tokenizer = TokenizerLoader.TryLoad(dir) ?? throw new InvalidOperationException($"no tokenizer in {dir}");
        using var ckpt = Checkpoint.Open(dir);
        using var model = StageModel.Load(ckpt, 0, ckpt.Config.NumLayers);
        using var session = new StageSession(model);
        using var scope = NewDisposeScope();
        var ids = tensor(tokenizer.Encode(text).Select(i => (long)i).ToArray());
        return session.Forward(ids).to_type(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The chi-square statistic of <paramref name="counts"/> against <paramref name="p"/>·n over the tokens expected at least
    /// 5 times (the rest pooled into one bin), and its degrees of freedom.
    /// </summary>
    private static (double Statistic, int Df) ChiSquare(int[] counts, double[] p, int n)
    {
        double stat = 0, restExpected = 0, restObserved = 0;
        int bins = 0;
        for (int i = 0; i < p.Length; i++)
        {
            double e = p[i] * n;
            if (e >= 5) { stat += (counts[i] - e) * (counts[i] - e) / e; bins++; }
            else { restExpected += e; restObserved += counts[i]; }
        }
        if (restExpected >= 5) { stat += (restObserved - restExpected) * (restObserved - restExpected) / restExpected; bins++; }
        else Assert.True(restObserved <= 3 * restExpected + 10, $"{restObserved} draws fell on tokens expected {restExpected:F1} times in all");
        return (stat, bins - 1);
    }

    /// <summary>The chi-square quantile at 0.99 for <paramref name="df"/> (Wilson–Hilferty; within 1 % for df ≥ 3): p &gt; 0.01 ⇔ statistic below it.</summary>
    private static double Critical99(int df)
    {
        const double z = 2.3263478740408408; // standard normal quantile at 0.99
        double a = 2.0 / (9 * df);
        return df * Math.Pow(1 - a + z * Math.Sqrt(a), 3);
    }

    [Theory]
    [InlineData(1.0, 0, 1.0)]
    [InlineData(0.8, 40, 0.9)]
    public void Sampling_PointMassDraft_2000SeededDrawsFollowTheTargetDistribution(double temperature, int topK, double topP)
    {
        using var scope = NewDisposeScope();
        var row = CodeLogits("class Stack:\n    def push(self, item):\n        self.");
        var logits = stack([row, row]);   // the second row (the position after the draft) does not affect the first token
        var options = new SamplingOptions { Temperature = temperature, TopK = topK, TopP = topP, Seed = 0 };
        var p = new Sampler(options).Probabilities(row);
        int drafted = Enumerable.Range(0, p.Length).OrderByDescending(i => p[i]).Skip(1).First(); // the runner-up: often kept, often not
        var counts = new int[p.Length];
        int kept = 0;
        for (int seed = 0; seed < Draws; seed++)
        {
            var accepted = SpeculativeAcceptance.Accept(logits, [drafted], options with { Seed = seed }, step: 5);
            counts[accepted[0]]++;
            if (accepted.Length == 2) kept++;
        }
        var (stat, df) = ChiSquare(counts, p, Draws);
        output.WriteLine($"T={temperature} top-k {topK} top-p {topP}: p(draft) {p[drafted]:F3}, kept {kept}/{Draws}; chi² {stat:F1} on {df} df (99% quantile {Critical99(df):F1})");
        Assert.True(df >= 3, $"only {df} degrees of freedom: the distribution is too peaked to test");
        Assert.InRange(kept, 1, Draws - 1);   // both branches ran: kept and drawn from the residual
        Assert.Equal(kept, counts[drafted]);  // a point-mass draft's token comes only from acceptance (the residual excludes it)
        Assert.True(stat < Critical99(df), $"chi² {stat:F1} on {df} df: the speculative draws do not follow the target (p ≤ 0.01)");
    }

    [Fact]
    public void Sampling_DraftWithItsOwnDistribution_2000SeededDrawsFollowTheTargetDistribution()
    {
        using var scope = NewDisposeScope();
        var row = CodeLogits("import os\nimport sys\n\ndef main(");
        var logits = stack([row, row]);
        var options = new SamplingOptions { Temperature = 1, Seed = 0 };
        var p = new Sampler(options).Probabilities(row);
        // A draft model that is flatter than the target (temperature 2) and draws its token from its own distribution q.
        var q = new Sampler(options with { Temperature = 2 }).Probabilities(row);
        var counts = new int[p.Length];
        for (int seed = 0; seed < Draws; seed++)
        {
            // The draft's own draw: a counter-based uniform of another index (System.Random's first draws for
            // consecutive seeds are nearly evenly spaced, which would make the draft stratified, not random).
            int drafted = DrawFrom(q, Sampler.Uniform(seed, 1_000_000));
            var accepted = SpeculativeAcceptance.Accept(logits, [drafted], options with { Seed = seed }, step: 0, draftProbabilities: [q]);
            counts[accepted[0]]++;
        }
        var (stat, df) = ChiSquare(counts, p, Draws);
        output.WriteLine($"draft q = target at T=2: chi² {stat:F1} on {df} df (99% quantile {Critical99(df):F1})");
        Assert.True(df >= 3);
        Assert.True(stat < Critical99(df), $"chi² {stat:F1} on {df} df: the speculative draws do not follow the target (p ≤ 0.01)");
    }

    /// <summary>
    /// The real draft path: codelm-tiny's trained 1-layer draft model in a <see cref="DraftModelRunner"/> proposes the token
    /// after a Python prefix (drawn from its own distribution q with the draft stream of the job's seed, as on a last-stage
    /// node), and the next step's acceptance test takes q from the runner (<see cref="DraftModelRunner.DistributionsFor"/>)
    /// against codelm-tiny's logits at that position. 2,000 seeds: the tokens follow the target's distribution.
    /// </summary>
    [Theory]
    [InlineData(1.0, 0, 1.0)]
    [InlineData(0.8, 40, 0.9)]
    public void Sampling_TrainedDraftModel_2000SeededDrawsFollowTheTargetDistribution(double temperature, int topK, double topP)
    {
        using var scope = NewDisposeScope();
        const string text = "class Stack:\n    def push(self, item):\n        self.";
        var row = CodeLogits(text);
        var logits = stack([row, row]);
        var tokenizer = TokenizerLoader.TryLoad(BuiltInModels.CodeLmTiny)!;
        int[] prompt = [.. tokenizer.Encode(text)];
        var p = new Sampler(new SamplingOptions { Temperature = temperature, TopK = topK, TopP = topP }).Probabilities(row);
        using var drafter = DraftModelRunner.Load(BuiltInModels.CodeLmTinyDraft, WeightFormat.F32, kvTokens: 4096);
        var counts = new int[p.Length];
        int kept = 0, step = 5;
        var draftedTokens = new HashSet<int>();
        for (int seed = 0; seed < Draws; seed++)
        {
            var sampling = new SamplingParams { Temperature = temperature, TopK = topK, TopP = topP, Seed = (ulong)seed };
            // Step 4 of a job produced the prompt's last token: the runner drafts one token to follow it (index 5)…
            var produced = new ForwardRequest { SessionId = seed, Step = step - 1, StartPosition = 0, Sampling = sampling, DraftContext = prompt[..^1], DraftCount = 1 };
            int[] draft = drafter.Propose(produced, [prompt[^1]]);
            Assert.Single(draft);
            draftedTokens.Add(draft[0]);
            // …and step 5 verifies it with the runner's distribution of it.
            var verify = new ForwardRequest { SessionId = seed, Step = step, StartPosition = prompt.Length - 1, Sampling = sampling, DraftContext = [prompt[^1]], Draft = draft, DraftCount = 1 };
            var q = drafter.DistributionsFor(verify);
            Assert.NotNull(q);
            var options = LastStageSampling.OptionsOf(sampling);
            var accepted = SpeculativeAcceptance.Accept(logits, draft, options, step, q);
            counts[accepted[0]]++;
            if (accepted.Length == 2) kept++;
            drafter.Close(seed);
        }
        var (stat, df) = ChiSquare(counts, p, Draws);
        output.WriteLine($"trained draft, T={temperature} top-k {topK} top-p {topP}: {draftedTokens.Count} distinct drafts, kept {kept}/{Draws}; chi² {stat:F1} on {df} df (99% quantile {Critical99(df):F1})");
        Assert.True(df >= 3, $"only {df} degrees of freedom: the distribution is too peaked to test");
        Assert.True(draftedTokens.Count >= 3, "the draft model did not draw: every seed drafted the same few tokens");
        Assert.InRange(kept, 1, Draws - 1);   // both branches ran: kept and drawn from the residual
        Assert.True(stat < Critical99(df), $"chi² {stat:F1} on {df} df: the speculative draws do not follow the target (p ≤ 0.01)");
    }

    private static int DrawFrom(double[] q, double u)
    {
        double acc = 0;
        for (int i = 0; i < q.Length; i++)
            if ((acc += q[i]) > u) return i;
        return q.Length - 1;
    }

    [Fact]
    public void Sampling_SameSeedAndStep_DecidesTheSame_AnotherStepDrawsAfresh()
    {
        using var scope = NewDisposeScope();
        var row = CodeLogits("for i in range(");
        var logits = stack([row, row, row]);
        var options = new SamplingOptions { Temperature = 1, Seed = 42 };
        var p = new Sampler(options).Probabilities(row);
        int best = Enumerable.Range(0, p.Length).MaxBy(i => p[i]);
        int[] draft = [best, best];
        var first = Enumerable.Range(0, 50).Select(s => SpeculativeAcceptance.Accept(logits, draft, options, step: s)).ToArray();
        var again = Enumerable.Range(0, 50).Select(s => SpeculativeAcceptance.Accept(logits, draft, options, step: s)).ToArray();
        Assert.Equal(first.Select(a => string.Join(",", a)), again.Select(a => string.Join(",", a)));
        Assert.True(first.Select(a => string.Join(",", a)).Distinct().Count() > 1, "every step decided alike: the draws do not depend on the step");
    }
}
