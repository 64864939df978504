using MessagePack;

namespace Swarm.Protocol;

/// <summary>A half-open range of transformer layers [<see cref="Start"/>, <see cref="End"/>), like Petals' block indices.</summary>
/// <remarks>Keys: 0 = Start, 1 = End. Append-only.</remarks>
[MessagePackObject]
public readonly record struct LayerRange
{
    /// <summary>Creates the range [<paramref name="start"/>, <paramref name="end"/>).</summary>
    [SerializationConstructor]
    public LayerRange(int start, int end)
    {
        Start = start;
        End = end;
    }

    /// <summary>First layer held (inclusive).</summary>
    [Key(0)] public int Start { get; }

    /// <summary>One past the last layer held (exclusive).</summary>
    [Key(1)] public int End { get; }

    /// <summary>Number of layers in the range.</summary>
    [IgnoreMember] public int Count => End - Start;

    /// <summary>True when 0 ≤ Start &lt; End.</summary>
    [IgnoreMember] public bool IsValid => Start >= 0 && End > Start;

    /// <inheritdoc/>
    public override string ToString() => $"[{Start},{End})";
}

/// <summary>Lifecycle state a node reports in <see cref="Heartbeat"/>. Values are wire values: append only.</summary>
public enum NodeState
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
}
