namespace Swarm.Coordinator.Jobs;

/// <summary>Limits of the job queue.</summary>
internal sealed class JobAdmissionOptions
{
    /// <summary>Jobs generating at once. Default 16.</summary>
    public int MaxConcurrentJobs { get; set; } = 16;

    /// <summary>Jobs waiting beyond the running ones; more are rejected at once. Default 256.</summary>
    public int MaxQueueLength { get; set; } = 256;

    /// <summary>
    /// Longest a job waits in the queue — for a free slot or for uncovered layers to be served — before it fails
    /// with an error naming the reason (and the uncovered layers). Default 30 s.
    /// </summary>
    public TimeSpan QueueTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Returns every problem with these options (empty when valid).</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (MaxConcurrentJobs < 1) errors.Add($"{nameof(MaxConcurrentJobs)} must be at least 1");
        if (MaxQueueLength < 0) errors.Add($"{nameof(MaxQueueLength)} must not be negative");
        if (QueueTimeout < TimeSpan.Zero) errors.Add($"{nameof(QueueTimeout)} must not be negative");
        return errors;
    }
}
