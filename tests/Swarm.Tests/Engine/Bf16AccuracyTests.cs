using Swarm.Checkpoints;
using Swarm.Model;
using Swarm.Tests.Model;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Swarm.Tests.Engine;

/// <summary>
/// bf16 compute (<c>StageModel.Load(..., ScalarType.BFloat16)</c>) measured against the HF fp32 fixtures.
/// bf16 keeps 8 mantissa bits (relative rounding 2⁻⁹ ≈ 0.2%), so logits are expected to be off by about that
/// fraction of their scale, compounded over layers — orders of magnitude above the f32 tolerance, and enough
/// to flip near-tied greedy choices (the fixtures' smallest top-1/top-2 gap is 0.0011).
/// </summary>
public class Bf16AccuracyTests(ITestOutputHelper output)
{
    public static TheoryData<string> Fixtures => new() { Fixture.Tiny, Fixture.Small };

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void Bf16Compute_AccuracyAgainstFixture(string name)
    {
        using var fx = new Fixture(name);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        using var model = StageModel.Load(ckpt, 0, ckpt.Config.NumLayers, ScalarType.BFloat16);
        Assert.Equal(ScalarType.BFloat16, model.ComputeDtype);

        double worstAbs = 0, worstRel = 0;
        int teacherAgree = 0, teacherTotal = 0, freeAgree = 0, freeTotal = 0;
        for (int p = 0; p < fx.PromptCount; p++)
        {
            using var scope = NewDisposeScope();
            var prompt = fx.Ids($"prompt.{p}");
            var golden = fx.Ids($"greedy.{p}");

            // logits of one full forward over the prompt
            using (var session = new StageSession(model))
            {
                var logits = session.Forward(tensor(prompt), allPositions: true);
                var expected = fx.Ref($"logits.{p}");
                double abs = (logits - expected).abs().max().item<float>();
                worstAbs = Math.Max(worstAbs, abs);
                worstRel = Math.Max(worstRel, abs / expected.abs().max().item<float>());
            }

            // teacher-forced: over prompt + golden continuation, does bf16's top-1 at each step equal HF's next token?
            using (var session = new StageSession(model))
            {
                long[] seq = [.. prompt, .. golden[..^1]];
                var top = session.Forward(tensor(seq), allPositions: true).argmax(-1);
                var predicted = top.narrow(0, prompt.Length - 1, golden.Length).data<long>().ToArray();
                teacherAgree += predicted.Zip(golden).Count(x => x.First == x.Second);
                teacherTotal += golden.Length;
            }

            // free-running greedy through LocalPipeline: tokens equal to HF's before the first divergence
            var got = ModelFixtureTests.GreedyDecode([model], prompt, golden.Length);
            int prefix = got.Zip(golden).TakeWhile(x => x.First == x.Second).Count();
            freeAgree += prefix;
            freeTotal += golden.Length;
            output.WriteLine($"{name} prompt {p} (len {prompt.Length}): greedy prefix agreement {prefix}/{golden.Length}");
        }
        double teacher = (double)teacherAgree / teacherTotal;
        output.WriteLine($"{name} bf16: max |Δlogits| = {worstAbs:g3} ({100 * worstRel:F2}% of max |logit|), " +
                         $"teacher-forced top-1 agreement {teacherAgree}/{teacherTotal} = {100 * teacher:F1}%, greedy prefix {freeAgree}/{freeTotal}");

        // Measured here (TorchSharp 0.107, AVX-512 bf16): tiny 0.045 abs / 1.3% of scale, top-1 96.9% (93/96);
        // small 0.043 / 1.3%, 98.6% (71/72). The bounds leave ~2× headroom for other CPUs' bf16 kernels while
        // still failing on a real bug (a wrong bias or rotary gives tens of percent and ~chance agreement).
        Assert.True(worstRel <= 0.03, $"{name}: bf16 logits off by {100 * worstRel:F2}% of their scale (> 3%)");
        Assert.True(teacher >= 0.9, $"{name}: bf16 top-1 agrees with HF on only {100 * teacher:F1}% of steps (< 90%)");
    }
}
