using System.Diagnostics;
using MessagePack;

namespace Swarm.Protocol;

/// <summary>
/// What travels on the wire: one message kind plus the routing, correlation and tracing fields every message needs.
/// </summary>
/// <remarks>
/// Keys (append-only): 0 = Version (always first, so a receiver can reject another version before decoding the rest),
/// 1 = MessageId, 2 = CorrelationId, 3 = SessionId, 4 = TraceParent, 5 = TraceState, 6 = Body.
/// </remarks>
[MessagePackObject]
public sealed record Envelope
{
    /// <summary>Protocol version of the sender; <see cref="ProtocolInfo.Version"/>.</summary>
    [Key(0)] public int Version { get; init; } = ProtocolInfo.Version;

    /// <summary>Sender-unique id of this message (&gt; 0). The transport assigns one when it is 0.</summary>
    [Key(1)] public long MessageId { get; init; }

    /// <summary>For a reply: the <see cref="MessageId"/> of the request it answers; 0 otherwise.</summary>
    [Key(2)] public long CorrelationId { get; init; }

    /// <summary>Session the message concerns (for logs and routing without decoding the body); 0 if none.</summary>
    [Key(3)] public long SessionId { get; init; }

    /// <summary>W3C <c>traceparent</c> of the sender's current activity, or null.</summary>
    [Key(4)] public string? TraceParent { get; init; }

    /// <summary>W3C <c>tracestate</c>, or null.</summary>
    [Key(5)] public string? TraceState { get; init; }

    /// <summary>The message. Never null in an envelope returned by <see cref="MessageCodec.TryDeserialize"/>.</summary>
    [Key(6)] public required IMessage Body { get; init; }

    /// <summary>
    /// Wraps <paramref name="body"/> in an envelope carrying the trace context of <paramref name="activity"/>
    /// (default: <see cref="Activity.Current"/>).
    /// </summary>
    public static Envelope Create(IMessage body, long sessionId = 0, long correlationId = 0, Activity? activity = null)
    {
        ArgumentNullException.ThrowIfNull(body);
        activity ??= Activity.Current;
        bool w3c = activity is { IdFormat: ActivityIdFormat.W3C };
        return new Envelope
        {
            Body = body,
            SessionId = sessionId,
            CorrelationId = correlationId,
            TraceParent = w3c ? activity!.Id : null,
            TraceState = w3c ? activity!.TraceStateString : null,
        };
    }

    /// <summary>A reply to this envelope: same session and trace context, <see cref="CorrelationId"/> = this <see cref="MessageId"/>.</summary>
    public Envelope CreateReply(IMessage body)
    {
        ArgumentNullException.ThrowIfNull(body);
        return new Envelope { Body = body, SessionId = SessionId, CorrelationId = MessageId, TraceParent = TraceParent, TraceState = TraceState };
    }

    /// <summary>Parses the carried trace context, to start a child activity on the receiving side.</summary>
    /// <returns>False when no (valid) traceparent is present.</returns>
    public bool TryGetParentContext(out ActivityContext context)
    {
        context = default;
        return TraceParent is not null && ActivityContext.TryParse(TraceParent, TraceState, isRemote: true, out context);
    }
}
