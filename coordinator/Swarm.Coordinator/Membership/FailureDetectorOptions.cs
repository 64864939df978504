namespace Swarm.Coordinator.Membership;

/// <summary>
/// Timing of heartbeats and failure detection. The defaults confirm a crashed node dead within 3 s
/// provided the service calls <see cref="NodeRegistry.Evaluate"/> at least every
/// <see cref="EvaluationInterval"/>: silence of <see cref="DeadAfter"/> (2.5 s) plus at most one
/// evaluation period (250 ms).
/// </summary>
internal sealed class FailureDetectorOptions
{
    /// <summary>How often nodes send heartbeats. Default 500 ms.</summary>
    public TimeSpan HeartbeatInterval { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>How often the service should call <see cref="NodeRegistry.Evaluate"/>. Default 250 ms.</summary>
    public TimeSpan EvaluationInterval { get; set; } = TimeSpan.FromMilliseconds(250);

    /// <summary>
    /// Silence after which a node becomes Suspect. Default 1.25 s (two and a half beats), so one lost
    /// beat does not even raise suspicion, and one late beat raises at most suspicion.
    /// </summary>
    public TimeSpan SuspectAfter { get; set; } = TimeSpan.FromMilliseconds(1250);

    /// <summary>Silence after which a node is confirmed Dead. Default 2.5 s (five beats).</summary>
    public TimeSpan DeadAfter { get; set; } = TimeSpan.FromMilliseconds(2500);

    /// <summary>
    /// Silence after which a node is confirmed Dead when requests to it have failed since its last
    /// heartbeat: failed requests accelerate the verdict. Default 1 s.
    /// </summary>
    public TimeSpan DeadAfterWhenFailing { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Failed requests within <see cref="FailureWindow"/> (without a success in between) after which a node
    /// is confirmed Dead even if it still heartbeats: it answers the coordinator but not its peers. Default 3.
    /// </summary>
    public int FailuresToDead { get; set; } = 3;

    /// <summary>How long a reported request failure counts. Default 10 s.</summary>
    public TimeSpan FailureWindow { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Weight of a new RTT sample in the smoothed RTT (exponential moving average). Default 0.25.</summary>
    public double RttSmoothing { get; set; } = 0.25;

    /// <summary>Returns every problem with these options (empty when valid).</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (HeartbeatInterval <= TimeSpan.Zero) errors.Add($"{nameof(HeartbeatInterval)} must be positive");
        if (EvaluationInterval <= TimeSpan.Zero) errors.Add($"{nameof(EvaluationInterval)} must be positive");
        if (SuspectAfter <= HeartbeatInterval) errors.Add($"{nameof(SuspectAfter)} must exceed {nameof(HeartbeatInterval)}");
        if (DeadAfter <= SuspectAfter) errors.Add($"{nameof(DeadAfter)} must exceed {nameof(SuspectAfter)}");
        if (DeadAfterWhenFailing <= TimeSpan.Zero || DeadAfterWhenFailing > DeadAfter)
            errors.Add($"{nameof(DeadAfterWhenFailing)} must be positive and at most {nameof(DeadAfter)}");
        if (FailuresToDead < 1) errors.Add($"{nameof(FailuresToDead)} must be at least 1");
        if (FailureWindow <= TimeSpan.Zero) errors.Add($"{nameof(FailureWindow)} must be positive");
        if (!(RttSmoothing > 0 && RttSmoothing <= 1)) errors.Add($"{nameof(RttSmoothing)} must be in (0, 1]");
        return errors;
    }

    /// <summary>Throws one exception listing every problem.</summary>
    /// <exception cref="ArgumentException">The options are invalid.</exception>
    public void ThrowIfInvalid()
    {
        var errors = Validate();
        if (errors.Count > 0) throw new ArgumentException("invalid failure detector options: " + string.Join("; ", errors));
    }
}
