using Swarm.Node;
using Swarm.Protocol;
using Xunit;
using static TorchSharp.torch;

namespace Swarm.Tests.Node;

/// <summary>
/// The last stage's fingerprints made in one batch for all the steps an iteration finishes
/// (<see cref="LastStageSampling.Fingerprints"/>) against the row-by-row <see cref="LastStageSampling.Fingerprint"/>:
/// the same projection (to f32 rounding), runner-up and margin per step, the step's own input fingerprint, the last row
/// of multi-position logits, and none for steps without logits or with a draft to verify.
/// </summary>
public class LastStageSamplingTests
{
    [Fact]
    public void Fingerprints_MixedBatch_MatchRowByRow()
    {
        using var scope = NewDisposeScope();
        const int vocab = 1031;
        var gen = new Generator(11);
        (ForwardRequest Request, Tensor? Logits)[] cases =
        [
            (new ForwardRequest { Step = 3 }, randn(vocab, generator: gen)),
            (new ForwardRequest { Step = 4 }, randn(3, vocab, generator: gen)),       // several positions: the last is sampled
            (new ForwardRequest { Step = 5 }, null),                                   // no logits (cancelled or failed)
            (new ForwardRequest { Step = 6, Draft = [7, 8] }, randn(3, vocab, generator: gen)), // speculative: judged elsewhere
            (new ForwardRequest { Step = 7 }, randn(1, vocab, generator: gen).to_type(ScalarType.BFloat16)),
        ];
        var finished = cases.Select((c, i) => (Step: new QueuedStep(c.Request, null, zeros(4), 0) { InputFingerprint = [i, -i] }, c.Logits)).ToList();
        try
        {
            var batch = LastStageSampling.Fingerprints(finished);

            Assert.Equal(finished.Count, batch.Length);
            Assert.Null(batch[2]);
            Assert.Null(batch[3]);
            foreach (int i in new[] { 0, 1, 4 })
            {
                var logits = finished[i].Logits!;
                var single = LastStageSampling.Fingerprint(finished[i].Step.InputFingerprint, logits.reshape(-1, vocab)[-1]);
                var got = batch[i]!;
                Assert.Same(finished[i].Step.InputFingerprint, got.Input);
                Assert.Equal(single.RunnerUp, got.RunnerUp);
                Assert.Equal(single.Margin, got.Margin, 1e-5f);
                Assert.Equal(single.Output.Length, got.Output.Length);
                for (int j = 0; j < single.Output.Length; j++)
                    Assert.True(Math.Abs(single.Output[j] - got.Output[j]) <= 1e-4f * (1 + Math.Abs(single.Output[j])),
                        $"step {i} projection {j}: batch {got.Output[j]} vs row {single.Output[j]}");
            }
        }
        finally
        {
            foreach (var (step, _) in finished) step.Dispose();
        }
    }
}
