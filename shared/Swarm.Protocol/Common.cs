namespace Swarm.Protocol;

/// <summary>Readiness a node reports of itself in <see cref="Heartbeat"/> (the coordinator derives its own membership status from it and from the failure detector). Values are wire values: append only.</summary>
public enum NodeReadiness
{
    /// <summary>Connected, no range assigned yet.</summary>
    Idle = 0,
    /// <summary>Loading the weights of an assigned range.</summary>
    Loading = 1,
    /// <summary>Serving its range.</summary>
    Ready = 2,
    /// <summary>Finishing in-flight steps, accepting no new sessions (after <see cref="Drain"/> or before <see cref="Leave"/>).</summary>
    Draining = 3,
}

/// <summary>Error codes carried by <see cref="Refused"/>, <see cref="StepFailed"/> and <see cref="ErrorReply"/>. Wire values: append only.</summary>
public enum ErrorCode
{
    /// <summary>Not classified.</summary>
    Unknown = 0,
    /// <summary>The message was malformed or violated a limit.</summary>
    BadRequest = 1,
    /// <summary>The peer speaks another protocol version.</summary>
    VersionMismatch = 2,
    /// <summary>The peer is not authenticated or not allowed to do this.</summary>
    Unauthorized = 3,
    /// <summary>The receiver is overloaded (its inbound queue was full); retry later or elsewhere.</summary>
    Overloaded = 4,
    /// <summary>The session (or job) is unknown to the receiver, e.g. expired or never opened.</summary>
    UnknownSession = 5,
    /// <summary>The receiver does not hold the requested layers.</summary>
    RangeNotLoaded = 6,
    /// <summary>No memory left (KV cache full).</summary>
    OutOfMemory = 7,
    /// <summary>An unexpected failure inside the receiver.</summary>
    Internal = 8,
    /// <summary>A downstream operation timed out.</summary>
    Timeout = 9,
    /// <summary>The job was cancelled.</summary>
    Cancelled = 10,
    /// <summary>The receiver is shutting down.</summary>
    ShuttingDown = 11,
    /// <summary>The node holds a different model than the swarm's.</summary>
    ModelMismatch = 12,
    /// <summary>The next hop of the route could not be reached.</summary>
    NextHopUnreachable = 13,
    /// <summary>The node's identity is banned: a spot check caught it returning wrong results (<c>--ban-time</c>).</summary>
    Banned = 14,
}
