using Swarm.Checkpoints;
using Swarm.Coordinator.Verification;
using Swarm.Model;
using Swarm.Node;
using Swarm.Node.Verification;
using Swarm.Protocol;
using Swarm.Tests.Model;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Swarm.Tests.Verification;

/// <summary>
/// Fingerprints as nodes compute them (a real <see cref="StageHost"/> over a fixture, two stages) and as the coordinator
/// compares them: honest replicas of different weight types agree, a corrupted one does not.
/// </summary>
public class FingerprintTests(ITestOutputHelper output)
{
    private static readonly VerificationOptions Options = new();

    /// <summary>Both stages of <paramref name="prompt"/>'s prefill on hosts of <paramref name="dtype"/>: the first's and the last's answers.</summary>
    private static (ReplicaAnswer First, ReplicaAnswer Last) Prefill(Checkpoint ckpt, long[] prompt, ScalarType dtype, StepFault? fault = null)
    {
        int mid = ckpt.Config.NumLayers / 2, end = ckpt.Config.NumLayers;
        Hop[] route = [new Hop { NodeId = 1, Endpoint = "127.0.0.1:1", Layers = new LayerRange(0, mid) }, new Hop { NodeId = 2, Endpoint = "127.0.0.1:2", Layers = new LayerRange(mid, end) }];
        using var a = new StageHost(StageModel.Load(ckpt, 0, mid, dtype), 64L << 20, fault: fault);
        using var b = new StageHost(StageModel.Load(ckpt, mid, end, dtype), 64L << 20, fault: fault);
        var request = new ForwardRequest { SessionId = 1, Kind = StepKind.Prefill, Input = WireTensor.FromTokenIds(prompt), Route = route };
        var first = a.Run(request);
        var second = b.Run(request with { Route = route[1..], Input = WireDTypeConversion.Convert(first.Hidden!, WireDType.F16) });
        return (new ReplicaAnswer(1, first.Fingerprint, -1), new ReplicaAnswer(2, second.Fingerprint, second.Token!.Value));
    }

    [Fact]
    public void Fingerprint_F32AgainstBf16_StaysWellInsideTolerance()
    {
        using var fx = new Fixture(Fixture.Small);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        double worst = 0;
        for (int p = 0; p < fx.PromptCount; p++)
        {
            var prompt = fx.Ids($"prompt.{p}");
            var f32 = Prefill(ckpt, prompt, ScalarType.Float32);
            var bf16 = Prefill(ckpt, prompt, ScalarType.BFloat16);
            Assert.Equal(prompt.Length * StageFingerprint.Width, f32.First.Fingerprint.Output.Length);
            Assert.Equal(prompt.Length * StageFingerprint.Width, f32.Last.Fingerprint.Input.Length);
            Assert.Empty(f32.First.Fingerprint.Input);
            Assert.Equal(StageFingerprint.Width, f32.Last.Fingerprint.Output.Length);
            double hidden = FingerprintComparer.MaxDistance(f32.First.Fingerprint.Output, bf16.First.Fingerprint.Output);
            double input = FingerprintComparer.MaxDistance(f32.Last.Fingerprint.Input, bf16.Last.Fingerprint.Input);
            double logits = FingerprintComparer.MaxDistance(f32.Last.Fingerprint.Output, bf16.Last.Fingerprint.Output);
            output.WriteLine($"prompt {p} ({prompt.Length} positions): f32 vs bf16 distance hidden {hidden:F4}, next input {input:F4}, logits {logits:F4}; tokens {f32.Last.Token}/{bf16.Last.Token}");
            worst = Math.Max(worst, Math.Max(hidden, Math.Max(input, logits)));
            Assert.True(FingerprintComparer.Agree(f32.First, bf16.First, Options));
            Assert.True(FingerprintComparer.Agree(f32.Last, bf16.Last, Options));
        }
        output.WriteLine($"worst honest distance {worst:F4}; tolerance {Options.Tolerance}");
        Assert.True(worst < Options.Tolerance / 2, $"honest f32/bf16 replicas differ by {worst:F4}, too close to the tolerance {Options.Tolerance}");
    }

    [Fact]
    public void Fingerprint_CorruptedReplica_IsFarOutsideTolerance()
    {
        using var fx = new Fixture(Fixture.Small);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        var prompt = fx.Ids("prompt.0");
        var honest = Prefill(ckpt, prompt, ScalarType.Float32);
        var corrupt = Prefill(ckpt, prompt, ScalarType.Float32, new StepFault(StepFaultKind.Corrupt, 1.0, seed: 1));
        double hidden = FingerprintComparer.MaxDistance(honest.First.Fingerprint.Output, corrupt.First.Fingerprint.Output);
        double logits = FingerprintComparer.MaxDistance(honest.Last.Fingerprint.Output, corrupt.Last.Fingerprint.Output);
        output.WriteLine($"corrupted: hidden {hidden:F3}, logits {logits:F3}");
        Assert.True(hidden > 5 * Options.Tolerance);
        Assert.False(FingerprintComparer.Agree(honest.First, corrupt.First, Options));
        Assert.False(FingerprintComparer.Agree(honest.Last, corrupt.Last, Options));
    }

    [Fact]
    public void Fingerprint_WrongTokenFault_DisagreesOnTheTokenOnly()
    {
        using var fx = new Fixture(Fixture.Small);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        var prompt = fx.Ids("prompt.0");
        var honest = Prefill(ckpt, prompt, ScalarType.Float32);
        var lying = Prefill(ckpt, prompt, ScalarType.Float32, new StepFault(StepFaultKind.Token, 1.0, seed: 1));
        Assert.Equal(fx.Ids("greedy.0")[0], honest.Last.Token);
        Assert.NotEqual(honest.Last.Token, lying.Last.Token);
        Assert.Equal(0, FingerprintComparer.MaxDistance(honest.Last.Fingerprint.Output, lying.Last.Fingerprint.Output));
        Assert.False(FingerprintComparer.Agree(honest.Last, lying.Last, Options));
    }

    [Theory]
    [InlineData("corrupt:0.2", StepFaultKind.Corrupt, 0.2)]
    [InlineData("token:1", StepFaultKind.Token, 1.0)]
    public void StepFault_Parse_ReadsKindAndProbability(string text, StepFaultKind kind, double p)
    {
        var fault = StepFault.Parse(text)!;
        Assert.Equal((kind, p), (fault.Kind, fault.Probability));
    }

    [Theory]
    [InlineData("corrupt")]
    [InlineData("corrupt:1.5")]
    [InlineData("flip:0.1")]
    public void StepFault_Parse_RejectsOtherText(string text) => Assert.Throws<FormatException>(() => StepFault.Parse(text));

    [Fact]
    public void Agree_NearTieSwappedTokens_Agree_ButAClearWinnerSwapped_DoesNot()
    {
        float[] logits = [.. Enumerable.Range(0, StageFingerprint.Width).Select(_ => 1f)]; // RMS 1: ties below 0.1
        var a = new ReplicaAnswer(1, new StageFingerprint { Output = logits, RunnerUp = 8, Margin = 0.01f }, 7);
        var b = new ReplicaAnswer(2, new StageFingerprint { Output = logits, RunnerUp = 7, Margin = 0.02f }, 8);
        Assert.True(FingerprintComparer.Agree(a, b, Options));
        Assert.False(FingerprintComparer.Agree(a with { Fingerprint = a.Fingerprint with { Margin = 2 } }, b, Options));
        Assert.False(FingerprintComparer.Agree(a, b with { Token = 9 }, Options));
    }
}
