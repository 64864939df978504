using Swarm.Protocol;

namespace Swarm.Node;

/// <summary>What one step produced on this node: hidden states for the next hop, or the sampled token.</summary>
/// <param name="Hidden">
/// Hidden states [1, t, H] in the stage's compute dtype (F32 or BF16), exactly as computed; the hop forwarder converts
/// them to the request's <see cref="ForwardRequest.WireDType"/> off the compute thread (<see cref="WireDTypeConversion"/>).
/// </param>
/// <param name="Milliseconds">From submission to completion (queueing, batched forward passes, sampling).</param>
/// <param name="SampleMilliseconds">Time spent sampling the token (last stage).</param>
public sealed record StepOutput(WireTensor? Hidden, int? Token, double Milliseconds, double SampleMilliseconds = 0)
{
    /// <summary>The sampled token's log-probabilities when the step asked for them (last stage); else null.</summary>
    public TokenLogprobs? Logprobs { get; init; }

    /// <summary>The scored input tokens' log-probabilities (last stage, echo); else empty.</summary>
    public TokenLogprobs[] InputLogprobs { get; init; } = [];

    /// <summary>The outputs of this stage's layers the step asked to capture (f32), in layer order; else empty.</summary>
    public LayerHiddenStates[] HiddenStates { get; init; } = [];

    /// <summary>For a step that verified a draft (last stage): the accepted drafted tokens then the model's next (see <see cref="TokenResult.Accepted"/>); else empty.</summary>
    public int[] Accepted { get; init; } = [];

    /// <summary>Tokens the node's draft model drafted after the step's own (last stage; see <see cref="TokenResult.Drafted"/>); else empty.</summary>
    public int[] Drafted { get; init; } = [];

    /// <summary>The step's fingerprint (its <see cref="StageFingerprint.NodeId"/> is filled in by whoever sends it).</summary>
    public StageFingerprint Fingerprint { get; init; } = new();
}

/// <summary>A step could not run; the code and message go back to the coordinator in a <see cref="StepFailed"/>.</summary>
public sealed class StepException(ErrorCode code, string message) : Exception(message)
{
    /// <summary>The error code replied to the coordinator.</summary>
    public ErrorCode Code { get; } = code;
}

/// <summary>A finished step: <see cref="Output"/> on success, <see cref="Error"/> otherwise; <see cref="State"/> is the submitter's.</summary>
public sealed record StepCompletion(ForwardRequest Request, object? State, StepOutput? Output, StepException? Error);

/// <summary>Counters of a <see cref="StageHost"/>, swapped as a whole after every change (safe to read from any thread).</summary>
public sealed record StageHostStats(int Sessions, int WaitingSessions, int PendingSteps, long KvTokensUsed, long KvTokenCapacity,
    int KvBlocksUsed, int KvBlocksTotal, long StepsServed, long TokensServed, long Iterations, long Preemptions, int PeakBatch, int LastBatch);
