namespace Swarm.Coordinator.Membership;

/// <summary>What a failure detector sees of one node.</summary>
/// <param name="LastHeartbeat">When the node was last heard from.</param>
/// <param name="FailuresInWindow">Failed requests reported within the failure window since the last success.</param>
/// <param name="FailuresSinceHeartbeat">Of those, how many were reported after the last heartbeat.</param>
internal readonly record struct NodeLiveness(DateTimeOffset LastHeartbeat, int FailuresInWindow, int FailuresSinceHeartbeat);

/// <summary>Decides a node's health from its liveness record; pure, so tests drive it with a fake clock.</summary>
internal interface IFailureDetector
{
    /// <summary>Name used in configuration and logs.</summary>
    string Name { get; }

    /// <summary>The health a node with this record has at <paramref name="now"/>.</summary>
    NodeHealth Evaluate(NodeLiveness liveness, DateTimeOffset now);
}

/// <summary>
/// Missed-heartbeat detector with failure acceleration: Suspect after <see cref="FailureDetectorOptions.SuspectAfter"/>
/// of silence or on any failed request; Dead after <see cref="FailureDetectorOptions.DeadAfter"/> of silence,
/// after <see cref="FailureDetectorOptions.DeadAfterWhenFailing"/> of silence when a request failed since the last
/// beat, or after <see cref="FailureDetectorOptions.FailuresToDead"/> failures in the window.
/// </summary>
internal sealed class MissedHeartbeatFailureDetector : IFailureDetector
{
    private readonly FailureDetectorOptions _options;

    /// <summary>Creates the detector.</summary>
    /// <exception cref="ArgumentException">The options are invalid.</exception>
    public MissedHeartbeatFailureDetector(FailureDetectorOptions options)
    {
        options.ThrowIfInvalid();
        _options = options;
    }

    /// <inheritdoc/>
    public string Name => "missed-heartbeats";

    /// <inheritdoc/>
    public NodeHealth Evaluate(NodeLiveness liveness, DateTimeOffset now)
    {
        TimeSpan silence = now - liveness.LastHeartbeat;
        if (silence >= _options.DeadAfter) return NodeHealth.Dead;
        if (liveness.FailuresSinceHeartbeat > 0 && silence >= _options.DeadAfterWhenFailing) return NodeHealth.Dead;
        if (liveness.FailuresInWindow >= _options.FailuresToDead) return NodeHealth.Dead;
        if (silence >= _options.SuspectAfter || liveness.FailuresInWindow > 0) return NodeHealth.Suspect;
        return NodeHealth.Alive;
    }
}
