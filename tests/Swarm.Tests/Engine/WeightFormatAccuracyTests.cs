using Swarm.Checkpoints;
using Swarm.Model;
using Swarm.Tests.Model;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Swarm.Tests.Engine;

/// <summary>
/// f16 and int8 weights (bf16 activations, f32 accumulation) against the HF fp32 fixtures and against Swarm's own f32
/// path, through both forward paths: a prefill over every position (libtorch GEMM on the weights converted to bf16)
/// and one-token decode steps (the GEMV kernels). The fixtures are random-weight models, where int8's per-row rounding
/// (half a step of max|w|/127) is large next to the weights' spread — the trained code model shows real-text accuracy
/// (<see cref="CodeModelInt8Tests"/>).
/// </summary>
public class WeightFormatAccuracyTests(ITestOutputHelper output)
{
    public static TheoryData<string, WeightFormat> Cases() => new()
    {
        { Fixture.Tiny, WeightFormat.F16 }, { Fixture.Small, WeightFormat.F16 },
        { Fixture.Tiny, WeightFormat.Int8 }, { Fixture.Small, WeightFormat.Int8 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Weights_AccuracyAgainstFixtureAndF32Decode(string name, WeightFormat format)
    {
        using var fx = new Fixture(name);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        using var model = StageModel.Load(ckpt, 0, ckpt.Config.NumLayers, format);
        using var f32 = StageModel.Load(ckpt, 0, ckpt.Config.NumLayers, WeightFormat.F32);
        Assert.Equal(ScalarType.BFloat16, model.ComputeDtype);

        double worstRel = 0, worstDecodeRel = 0;
        int agree = 0, total = 0, decodeAgree = 0, decodeTotal = 0;
        for (int p = 0; p < fx.PromptCount; p++)
        {
            using var scope = NewDisposeScope();
            var prompt = fx.Ids($"prompt.{p}");
            var golden = fx.Ids($"greedy.{p}");
            long[] seq = [.. prompt, .. golden[..^1]];

            // Prefill over prompt + golden continuation: logits of the prompt against HF's, top-1 against HF's next tokens.
            using (var session = new StageSession(model))
            {
                var logits = session.Forward(tensor(seq), allPositions: true);
                var expected = fx.Ref($"logits.{p}");
                var prefix = logits.narrow(0, 0, expected.shape[0]);
                worstRel = Math.Max(worstRel, (prefix - expected).abs().max().item<float>() / expected.abs().max().item<float>());
                var predicted = logits.argmax(-1).narrow(0, prompt.Length - 1, golden.Length).data<long>().ToArray();
                agree += predicted.Zip(golden).Count(x => x.First == x.Second);
                total += golden.Length;
            }

            // Decode, one token per step (the GEMV kernels), teacher-forced on the same sequence, against Swarm's f32 decode.
            using var a = new StageSession(model);
            using var b = new StageSession(f32);
            if (prompt.Length > 1) { a.Forward(tensor(prompt[..^1])); b.Forward(tensor(prompt[..^1])); }
            for (int i = prompt.Length - 1; i < seq.Length; i++)
            {
                using var step = NewDisposeScope();
                var la = a.Forward(tensor(new[] { seq[i] }));
                var lb = b.Forward(tensor(new[] { seq[i] }));
                worstDecodeRel = Math.Max(worstDecodeRel, (la - lb).abs().max().item<float>() / lb.abs().max().item<float>());
                decodeAgree += la.argmax().item<long>() == lb.argmax().item<long>() ? 1 : 0;
                decodeTotal++;
            }
        }
        double top1 = (double)agree / total, decodeTop1 = (double)decodeAgree / decodeTotal;
        output.WriteLine($"{name} {format.Name()}: prefill max |Δlogits| vs HF {100 * worstRel:F2}% of max |logit|, teacher-forced top-1 vs HF " +
                         $"{agree}/{total} = {100 * top1:F1}%; decode vs f32 max |Δ| {100 * worstDecodeRel:F2}%, top-1 {decodeAgree}/{decodeTotal} = {100 * decodeTop1:F1}%");

        // Measured here (Zen 4, AVX2 kernels): f16 — tiny 1.12% / 99.0% vs HF, decode 1.06% / 100% vs f32; small 1.29% / 98.6%,
        // 1.41% / 98.6%. int8 — tiny 2.23% / 99.0%, 2.56% / 99.0%; small 2.48% / 97.2%, 3.17% / 97.2%. The bounds leave ~2×
        // headroom and still fail on a real bug (a wrong scale, a row offset, a swapped half format give tens of percent
        // and near-chance agreement).
        var (maxRel, minTop1) = format == WeightFormat.F16 ? (0.03, 0.9) : (0.06, 0.9);
        Assert.True(worstRel <= maxRel, $"{name} {format}: prefill logits off by {100 * worstRel:F2}% of their scale (> {100 * maxRel}%)");
        Assert.True(worstDecodeRel <= maxRel, $"{name} {format}: decode logits off f32's by {100 * worstDecodeRel:F2}% (> {100 * maxRel}%)");
        Assert.True(top1 >= minTop1, $"{name} {format}: top-1 agrees with HF on {100 * top1:F1}% (< {100 * minTop1}%)");
        Assert.True(decodeTop1 >= minTop1, $"{name} {format}: decode top-1 agrees with f32 on {100 * decodeTop1:F1}% (< {100 * minTop1}%)");
    }
}
