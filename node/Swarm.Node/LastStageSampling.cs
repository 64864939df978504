using Swarm.Node.Verification;
using Swarm.Protocol;
using Swarm.Sampling;
using static TorchSharp.torch;

namespace Swarm.Node;

/// <summary>What the last stage derives from logits: an ordinary step's token and fingerprint, a speculative step's verdict.</summary>
internal static class LastStageSampling
{
    /// <summary>The job's sampling parameters as the sampler takes them.</summary>
    public static SamplingOptions OptionsOf(SamplingParams sampling) => new()
    {
        Temperature = sampling.Temperature,
        TopK = sampling.TopK,
        TopP = sampling.TopP,
        Seed = unchecked((long)sampling.Seed),
        MaxNewTokens = 1,
    };

    /// <summary>The last stage's fingerprint of a logits row [V]: its projection, runner-up token and top-2 margin.</summary>
    public static StageFingerprint Fingerprint(float[] inputFingerprint, Tensor row)
    {
        var (_, runnerUp, margin) = RowKernels.TopTwo(row);
        return new StageFingerprint { Input = inputFingerprint, Output = ActivationFingerprint.Project(row), RunnerUp = runnerUp, Margin = margin };
    }

    /// <summary>
    /// The fingerprints of several last positions' logits rows ([V] each) at once, as <see cref="Fingerprint"/> gives them
    /// row by row, with the projection of all the rows in one blocked pass over the projection matrix, the rows shared among the cores.
    /// </summary>
    /// <returns>Per finished step, the fingerprint of its last logits row; null for steps without logits and speculative steps.</returns>
    public static StageFingerprint?[] Fingerprints(IReadOnlyList<(QueuedStep Step, Tensor? Logits)> finished)
    {
        var result = new StageFingerprint?[finished.Count];
        var which = Enumerable.Range(0, finished.Count).Where(i => finished[i].Logits is not null && finished[i].Step.VerifiedPositions == 0).ToArray();
        if (which.Length == 0) return result;
        using var scope = NewDisposeScope();
        var rows = which.Select(i => LastRow(finished[i].Logits!)).ToArray();
        float[] projected = ActivationFingerprint.Project(rows);
        var tops = RowKernels.TopTwo(rows);
        int width = projected.Length / which.Length;
        for (int j = 0; j < which.Length; j++)
        {
            var (_, runnerUp, margin) = tops[j];
            result[which[j]] = new StageFingerprint
            {
                Input = finished[which[j]].Step.InputFingerprint, Output = projected.AsSpan(j * width, width).ToArray(),
                RunnerUp = runnerUp, Margin = margin,
            };
        }
        return result;
    }

    /// <summary>The row an ordinary step samples from: the last of its logits ([V] or [t, V]).</summary>
    private static Tensor LastRow(Tensor logits) => logits.reshape(-1, logits.shape[^1])[-1];

    /// <summary>
    /// An ordinary step's token from its logits (the last row is sampled with the step's sampling parameters, keyed by its
    /// index), its log-probabilities when asked for, and its fingerprint (empty when <paramref name="fingerprints"/> is false;
    /// <paramref name="printed"/> when the caller made it already, with <see cref="Fingerprints"/>).
    /// An injected fault corrupts the logits and the token.
    /// </summary>
    public static (int Token, TokenLogprobs? Logprobs, StageFingerprint Fingerprint) Sample(QueuedStep step, Tensor logits, StepFault? fault, bool fingerprints,
        StageFingerprint? printed = null)
    {
        var req = step.Request;
        var row = LastRow(logits);
        if (fault is not null) row = fault.Corrupt(row);
        int token = new Sampler(OptionsOf(req.Sampling), req.Step).Next(row);
        if (fault is not null) token = fault.Token(token, (int)row.shape[0]);
        var logprobs = req.Logprobs is { } lp ? LogprobScorer.Score(logits, [token], lp.Top)[0] : null;
        return (token, logprobs, !fingerprints ? new StageFingerprint() : printed ?? Fingerprint(step.InputFingerprint, row));
    }

    /// <summary>
    /// A speculative step's verdict from the logits of its verified positions (<see cref="QueuedStep.VerifiedLogits"/>): the
    /// accepted drafted tokens then the model's next (<see cref="SpeculativeAcceptance"/>), and the fingerprint of the row the
    /// first of them came from, as an ordinary step's. An injected fault corrupts the logits and the first token.
    /// <paramref name="draftProbabilities"/>: the draft model's distribution of each drafted token; null: point masses.
    /// </summary>
    public static (int[] Accepted, StageFingerprint Fingerprint) Verify(QueuedStep step, StepFault? fault, IReadOnlyList<double[]>? draftProbabilities = null)
    {
        using var scope = NewDisposeScope();
        var req = step.Request;
        var logits = step.VerifiedLogits();
        if (fault is not null) logits = fault.Corrupt(logits);
        var accepted = SpeculativeAcceptance.Accept(logits, req.Draft, OptionsOf(req.Sampling), req.Step, draftProbabilities);
        if (fault is not null) accepted[0] = fault.Token(accepted[0], (int)logits.shape[^1]);
        return (accepted, Fingerprint(step.InputFingerprint, logits[0]));
    }
}
