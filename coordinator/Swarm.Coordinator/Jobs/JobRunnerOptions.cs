using Swarm.Protocol;

namespace Swarm.Coordinator.Jobs;

/// <summary>Limits and timing of the job pipeline (admission, routing, steps, recovery).</summary>
internal sealed class JobRunnerOptions
{
    /// <summary>Transformer layers of the model: a route covers <c>[0, NumLayers)</c>. Required.</summary>
    public required int NumLayers { get; init; }

    /// <summary>Longest sequence (prompt + new tokens) the model takes; generation stops at it. Required.</summary>
    public required int ContextLength { get; init; }

    /// <summary>Dtype of activations between stages. Default f16.</summary>
    public WireDType Wire { get; init; } = WireDType.F16;

    /// <summary>Jobs generating at once. Default 16.</summary>
    public int MaxConcurrentJobs { get; init; } = 16;

    /// <summary>Jobs waiting beyond the running ones; more are refused with 429. Default 256.</summary>
    public int MaxQueueLength { get; init; } = 256;

    /// <summary>Longest a job waits for a slot, or for every layer to be served, before 503. Default 30 s.</summary>
    public TimeSpan QueueTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Longest wait for one step's reply before the route is treated as failed. Default 30 s.</summary>
    public TimeSpan StepTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Route repairs allowed per job; one more failure fails it with 503. Default 8.</summary>
    public int MaxRecoveriesPerJob { get; init; } = 8;

    /// <summary>
    /// Floor of a decode step's patience: once a step has taken this long, and 4× the job's recent step time, a node of
    /// the route that the failure detector suspects is treated as failed. Default 400 ms.
    /// </summary>
    public TimeSpan MinPatience { get; init; } = TimeSpan.FromMilliseconds(400);

    /// <summary>Back-off before replaying a step a node refused as overloaded, per recovery so far. Default 50 ms.</summary>
    public TimeSpan OverloadBackoff { get; init; } = TimeSpan.FromMilliseconds(50);

    /// <summary>How often queued jobs are checked against coverage and their deadline. Default 200 ms.</summary>
    public TimeSpan AdmissionTickInterval { get; init; } = TimeSpan.FromMilliseconds(200);

    /// <summary>Spot checks of nodes' results. Default: none (rate 0); the coordinator passes its <c>--verify-rate</c>.</summary>
    public Verification.VerificationOptions Verification { get; init; } = new();

    /// <summary>Speculative decoding of jobs without logprobs or hidden states. Default: none; the coordinator passes its <c>--speculative</c>.</summary>
    public Speculation.SpeculationOptions Speculation { get; init; } = new();

    /// <summary>Steps slower than this are logged with their route. Default 2 s.</summary>
    public TimeSpan SlowStepThreshold { get; init; } = TimeSpan.FromSeconds(2);
}
