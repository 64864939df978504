namespace Swarm.Protocol;

/// <summary>Constants shared by every peer that speaks the Swarm wire protocol.</summary>
public static class ProtocolInfo
{
    /// <summary>
    /// Version of the wire protocol. Bump it when a change is not append-only (a key changes meaning,
    /// a union member is removed); peers with a different version are refused at connect time and
    /// envelopes carrying another version are rejected by <see cref="MessageCodec"/>.
    /// </summary>
    /// <remarks>
    /// History: 1 = first release; 2 = sampling temperature and top-p as float64 under new keys (the float32 keys
    /// retired), <c>ForwardRequest.ReplyTo</c> retired.
    /// </remarks>
    public const int Version = 2;

    /// <summary>Default upper bound of one serialized envelope: 80 MiB (a 64 MiB tensor plus headroom).</summary>
    public const int DefaultMaxMessageBytes = 80 * 1024 * 1024;

    /// <summary>Upper bound of the W3C <c>traceparent</c> string (the standard form is 55 characters).</summary>
    public const int MaxTraceParentLength = 128;

    /// <summary>Upper bound of the W3C <c>tracestate</c> string (the W3C recommendation is 512 characters).</summary>
    public const int MaxTraceStateLength = 512;

    /// <summary>Upper bound of free-text fields (names, reasons, error messages, endpoints, devices).</summary>
    public const int MaxTextLength = 4096;

    /// <summary>Upper bound of the number of hops in a route and of stage timings in a result.</summary>
    public const int MaxRouteHops = 256;

    /// <summary>Most tensor digests one <see cref="AssignRange"/> may carry (a whole Pythia-12B has ~440 tensors).</summary>
    public const int MaxAssignedTensors = 16384;

    /// <summary>
    /// Most bytes one <see cref="TensorChunk"/> carries: 1 MiB, far below the transport's message limit, so a peer
    /// serving a large tensor never holds more than a chunk per request in memory.
    /// </summary>
    public const int MaxTensorChunkBytes = 1 << 20;

    /// <summary>Most peers one <see cref="AssignRange"/> names as sources of its tensors.</summary>
    public const int MaxWeightPeers = 16;

    /// <summary>Most alternatives a <see cref="LogprobsRequest"/> may ask for per position.</summary>
    public const int MaxTopLogprobs = 20;

    /// <summary>Most layers a <see cref="HiddenStatesRequest"/> may name (and hidden-state tensors a message may carry).</summary>
    public const int MaxCapturedLayers = 1024;

    /// <summary>Most drafted tokens one speculative step verifies (<see cref="ForwardRequest.Draft"/>).</summary>
    public const int MaxDraftTokens = 32;

    /// <summary>Upper bound of a tensor's rank.</summary>
    public const int MaxTensorRank = 8;
}
