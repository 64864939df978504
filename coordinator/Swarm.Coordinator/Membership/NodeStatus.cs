namespace Swarm.Coordinator.Membership;

/// <summary>Where a node is in its lifecycle, as the coordinator drives it.</summary>
internal enum NodePhase
{
    /// <summary>Registered, holds no range yet.</summary>
    Joining,
    /// <summary>Has been given a range and is loading its weights.</summary>
    Loading,
    /// <summary>Holds its range and accepts steps.</summary>
    Serving,
    /// <summary>Leaving gracefully: finishes in-flight work, receives no new jobs.</summary>
    Draining,
    /// <summary>Left gracefully; kept only for reporting until removed.</summary>
    Left,
}

/// <summary>What the failure detector believes about a node's liveness.</summary>
internal enum NodeHealth
{
    /// <summary>Heartbeats arrive on time and requests succeed.</summary>
    Alive,
    /// <summary>Late heartbeats or failed requests; still a member, routed to only as a last resort.</summary>
    Suspect,
    /// <summary>Confirmed dead. Terminal: the node must register again as a new incarnation.</summary>
    Dead,
}

/// <summary>
/// The single state shown to operators (<c>/api/swarm</c>, <c>swarm status</c>): the phase, unless the
/// node has left, is dead, or is suspected.
/// </summary>
internal enum NodeStatus
{
    /// <summary>See <see cref="NodePhase.Joining"/>.</summary>
    Joining,
    /// <summary>See <see cref="NodePhase.Loading"/>.</summary>
    Loading,
    /// <summary>See <see cref="NodePhase.Serving"/>.</summary>
    Serving,
    /// <summary>See <see cref="NodePhase.Draining"/>.</summary>
    Draining,
    /// <summary>See <see cref="NodeHealth.Suspect"/>.</summary>
    Suspect,
    /// <summary>See <see cref="NodeHealth.Dead"/>.</summary>
    Dead,
    /// <summary>See <see cref="NodePhase.Left"/>.</summary>
    Left,
    /// <summary>A spot check caught it returning wrong results: never routed to again, refused at re-registration for the ban time.</summary>
    Banned,
}
