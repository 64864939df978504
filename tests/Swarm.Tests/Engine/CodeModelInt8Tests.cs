using Swarm.Checkpoints;
using Swarm.Cli;
using Swarm.Model;
using Swarm.Tests.Model;
using Swarm.Tokenization;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Swarm.Tests.Engine;

/// <summary>
/// int8 weights on a trained model and real text: codelm-tiny (fp16 checkpoint, trained on Python) over a Python file it
/// never saw (<c>fixtures/heldout-python</c>). Held-out perplexity with int8 weights must be within 2 % of the f16 weights'
/// (both with bf16 activations), and int8's top-1 must agree with the f32 model's on ≥ 97 % of positions — teacher-forced,
/// both over whole windows (prefill) and one token per step (decode kernels).
/// </summary>
public class CodeModelInt8Tests(ITestOutputHelper output)
{
    private const int Window = 512, DecodeSteps = 200;

    [Fact]
    public void Int8_HeldOutPerplexityWithin2PercentOfF16_Top1AgreesWithF32()
    {
        string dir = BuiltInModels.CodeLmTiny;
        var tokenizer = TokenizerLoader.TryLoad(dir) ?? throw new InvalidOperationException($"no tokenizer in {dir}");
        var ids = tokenizer.Encode(File.ReadAllText(Path.Combine(Fixture.Root, "heldout-python", "gdb_providers.py"))).Select(i => (long)i).ToArray();
        Assert.True(ids.Length > 4 * Window, $"only {ids.Length} tokens of held-out text");
        using var ckpt = Checkpoint.Open(dir);
        int layers = ckpt.Config.NumLayers;
        using var f32 = StageModel.Load(ckpt, 0, layers, WeightFormat.F32);
        using var f16 = StageModel.Load(ckpt, 0, layers, WeightFormat.F16);
        using var int8 = StageModel.Load(ckpt, 0, layers, WeightFormat.Int8);

        double nll32 = 0, nll16 = 0, nll8 = 0;
        int agree = 0, count = 0;
        for (int start = 0; start + Window + 1 <= ids.Length; start += Window)
        {
            using var scope = NewDisposeScope();
            var input = tensor(ids[start..(start + Window)]);
            var targets = tensor(ids[(start + 1)..(start + Window + 1)]);
            var l32 = Logits(f32, input); var l16 = Logits(f16, input); var l8 = Logits(int8, input);
            nll32 += Nll(l32, targets); nll16 += Nll(l16, targets); nll8 += Nll(l8, targets);
            agree += (int)(l8.argmax(-1) == l32.argmax(-1)).sum().item<long>();
            count += Window;
        }
        double ppl32 = Math.Exp(nll32 / count), ppl16 = Math.Exp(nll16 / count), ppl8 = Math.Exp(nll8 / count);
        double top1 = (double)agree / count;
        double decodeTop1 = DecodeAgreement(int8, f32, ids[..(DecodeSteps + 1)]);
        output.WriteLine($"codelm-tiny on {count} held-out tokens: perplexity f32 {ppl32:F3}, f16 {ppl16:F3}, int8 {ppl8:F3} " +
                         $"(int8/f16 {100 * (ppl8 / ppl16 - 1):+0.00;-0.00}%); int8 top-1 = f32's on {100 * top1:F2}% (prefill), " +
                         $"{100 * decodeTop1:F2}% of {DecodeSteps} decode steps");

        Assert.InRange(ppl16, 5, 60); // a trained model on real code (README: 17.9 on its own held-out files), not noise
        Assert.True(Math.Abs(ppl8 / ppl16 - 1) <= 0.02, $"int8 perplexity {ppl8:F3} is not within 2% of f16's {ppl16:F3}");
        Assert.True(top1 >= 0.97, $"int8 top-1 agrees with f32 on only {100 * top1:F2}% of positions (< 97%)");
        Assert.True(decodeTop1 >= 0.97, $"int8 decode top-1 agrees with f32 on only {100 * decodeTop1:F2}% of steps (< 97%)");
    }

    /// <summary>f32 logits [t, V] of every position of one window.</summary>
    private static Tensor Logits(StageModel model, Tensor input)
    {
        using var session = new StageSession(model);
        return session.Forward(input, allPositions: true);
    }

    /// <summary>Summed negative log-likelihood of <paramref name="targets"/> under <paramref name="logits"/>.</summary>
    private static double Nll(Tensor logits, Tensor targets) =>
        -nn.functional.log_softmax(logits, -1).gather(1, targets.unsqueeze(1)).sum().item<float>();

    /// <summary>Fraction of one-token decode steps, teacher-forced on <paramref name="ids"/>, where both models pick the same top-1.</summary>
    private static double DecodeAgreement(StageModel a, StageModel b, long[] ids)
    {
        using var sa = new StageSession(a);
        using var sb = new StageSession(b);
        int same = 0;
        for (int i = 0; i < ids.Length - 1; i++)
        {
            using var scope = NewDisposeScope();
            var t = tensor(new[] { ids[i] });
            same += sa.Forward(t).argmax().item<long>() == sb.Forward(t).argmax().item<long>() ? 1 : 0;
        }
        return (double)same / (ids.Length - 1);
    }
}
