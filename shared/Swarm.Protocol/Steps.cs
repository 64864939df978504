using MessagePack;

namespace Swarm.Protocol;

/// <summary>What a <see cref="ForwardRequest"/> step does. Wire values: append only.</summary>
public enum StepKind
{
    /// <summary>The prompt (several positions at once) of a new session.</summary>
    Prefill = 0,
    /// <summary>One new token of an open session.</summary>
    Decode = 1,
    /// <summary>
    /// Rebuilds a session's KV cache on a replacement stage after a route repair: the stage's past inputs
    /// for positions [StartPosition, StartPosition + n) are run again. Semantics as Prefill; the last stage
    /// samples as usual (with a seeded sampler that reproduces the token already produced).
    /// </summary>
    Replay = 2,
}

/// <summary>How the previous stage reaches a hop (<see cref="Hop.Path"/>). Wire values: append only.</summary>
public enum HopPath
{
    /// <summary>Straight to <see cref="Hop.Endpoint"/>: the hop is reachable from anywhere.</summary>
    Direct = 0,
    /// <summary>
    /// To <see cref="Hop.Endpoint"/> (the endpoint the coordinator sees the hop at) through a hole the hop punches in its
    /// NAT toward the previous stage, told to by the coordinator (<see cref="Introduce"/>).
    /// </summary>
    Punched = 1,
    /// <summary>Through the relay at <see cref="Hop.Via"/>, which forwards the two nodes' end-to-end encrypted datagrams.</summary>
    Relayed = 2,
}

/// <summary>One stage of a route: which node runs which layers, where to reach it, and the key it must prove.</summary>
/// <remarks>Keys 0–5, append-only.</remarks>
[MessagePackObject]
public sealed record Hop
{
    /// <summary>The node's id (from <see cref="Welcome.NodeId"/>).</summary>
    [Key(0)] public int NodeId { get; init; }

    /// <summary>The node's data-plane endpoint "host:port".</summary>
    [Key(1)] public string Endpoint { get; init; } = "";

    /// <summary>Layers this hop runs.</summary>
    [Key(2)] public LayerRange Layers { get; init; }

    /// <summary>
    /// The node's static public key (32 bytes), as the coordinator saw it proven when the node registered: the node
    /// that hands a step on to this hop pins it when it connects, so a step never goes to an impostor at the endpoint.
    /// Null when the coordinator knows no key (a transport without encryption).
    /// </summary>
    [Key(3)] public byte[]? Key { get; init; }

    /// <summary>How the previous stage reaches this hop (the first hop is reached over its own control connection).</summary>
    [Key(4)] public HopPath Path { get; init; }

    /// <summary>
    /// For a <see cref="HopPath.Relayed"/> hop, the relay endpoint "host:port" the previous stage connects to (a wildcard
    /// host means the coordinator's own address, as the node knows it); empty otherwise. The previous stage still pins
    /// <see cref="Key"/>: the relay forwards ciphertext and cannot impersonate the hop.
    /// </summary>
    [Key(5)] public string Via { get; init; } = "";
}

/// <summary>
/// Sampling parameters applied by the last stage. The sampler's RNG for a step is seeded from
/// (<see cref="Seed"/>, <see cref="ForwardRequest.Step"/>), so a step replayed elsewhere draws the same token.
/// </summary>
/// <remarks>
/// Keys 1, 3–5, append-only. Keys 0 and 2 are retired (temperature and top-p as float32 in protocol version 1,
/// where a top-p of 1e-50 became 0): never reuse them.
/// </remarks>
[MessagePackObject]
public sealed record SamplingParams
{
    /// <summary>Keep only the K most likely tokens; 0 disables.</summary>
    [Key(1)] public int TopK { get; init; }

    /// <summary>Seed of the job's sampler.</summary>
    [Key(3)] public ulong Seed { get; init; }

    /// <summary>Softmax temperature; 0 means greedy (argmax).</summary>
    [Key(4)] public double Temperature { get; init; }

    /// <summary>Nucleus sampling mass in (0, 1]; 1 disables.</summary>
    [Key(5)] public double TopP { get; init; } = 1.0;
}

/// <summary>Time one stage spent on a step (receive to send, including queueing).</summary>
/// <remarks>Keys 0–1, append-only.</remarks>
[MessagePackObject]
public sealed record StageTiming
{
    /// <summary>The stage's node id.</summary>
    [Key(0)] public int NodeId { get; init; }

    /// <summary>Milliseconds between the stage receiving the step and handing its output to the transport.</summary>
    [Key(1)] public double Milliseconds { get; init; }
}

/// <summary>
/// One pipeline step travelling along a route. The coordinator sends it to the first hop; each hop runs
/// <c>Route[0].Layers</c> (its own), appends its <see cref="StageTiming"/> and forwards a copy with
/// <c>Route[1..]</c> and its output hidden states to <c>Route[1]</c>; the last hop (Route has one element)
/// applies the final norm and unembedding, samples, and sends <see cref="TokenResult"/> to the coordinator over its
/// control connection. A decode step thus costs N+1 messages for N stages. On failure a hop sends <see cref="StepFailed"/>
/// to the coordinator the same way.
/// Every step first truncates the session's KV cache on the stage to <see cref="StartPosition"/>, then appends.
/// </summary>
/// <remarks>
/// Keys 0–8 and 10–18, append-only. Key 9 is retired (a reply-to endpoint in protocol version 1 that no node read:
/// replies go over the node's coordinator connection): never reuse it.
/// </remarks>
[MessagePackObject]
public sealed record ForwardRequest : IMessage
{
    /// <summary>Job the step belongs to.</summary>
    [Key(0)] public long JobId { get; init; }

    /// <summary>Session whose KV cache the step extends (one per job and route).</summary>
    [Key(1)] public long SessionId { get; init; }

    /// <summary>Index of the generated token this step produces: 0 for the prefill, then 1, 2, …</summary>
    [Key(2)] public int Step { get; init; }

    /// <summary>Prefill, decode or replay.</summary>
    [Key(3)] public StepKind Kind { get; init; }

    /// <summary>Sequence position of the first row of <see cref="Input"/>.</summary>
    [Key(4)] public int StartPosition { get; init; }

    /// <summary>
    /// Token ids ([batch=1, positions], <see cref="WireDType.I64"/>) for the first stage; hidden states
    /// ([1, positions, hidden], in <see cref="WireDType"/>) for later stages.
    /// </summary>
    [Key(5)] public WireTensor Input { get; init; } = WireTensor.Empty;

    /// <summary>Hops still to run; element 0 is the receiver itself. Never empty.</summary>
    [Key(6)] public Hop[] Route { get; init; } = [];

    /// <summary>Dtype hidden states travel in between stages (F16 by default, F32 on request).</summary>
    [Key(7)] public WireDType WireDType { get; init; } = WireDType.F16;

    /// <summary>Sampling parameters used by the last stage.</summary>
    [Key(8)] public SamplingParams Sampling { get; init; } = new();

    /// <summary>Timings of the stages already run, in route order; each stage appends its own.</summary>
    [Key(10)] public StageTiming[] Timings { get; init; } = [];

    /// <summary>Log-probabilities the last stage reports with the token; null for none.</summary>
    [Key(11)] public LogprobsRequest? Logprobs { get; init; }

    /// <summary>Hidden states to capture on the way (each stage captures the layers inside its own hop); null for none.</summary>
    [Key(12)] public HiddenStatesRequest? HiddenStates { get; init; }

    /// <summary>Hidden states captured by the stages already run (f32), in layer order; each stage appends its own.</summary>
    [Key(13)] public LayerHiddenStates[] CapturedHiddenStates { get; init; } = [];

    /// <summary>Fingerprints of the stages already run, in route order; each stage appends its own (see <see cref="StageFingerprint"/>).</summary>
    [Key(14)] public StageFingerprint[] Fingerprints { get; init; } = [];

    /// <summary>A spot check's copy order for a later hop, or null (see <see cref="ShadowCopy"/>).</summary>
    [Key(15)] public ShadowCopy? Shadow { get; init; }

    /// <summary>
    /// Speculative decoding: tokens drafted after the last known one, which are the last <c>Draft.Length</c> positions of
    /// <see cref="Input"/> (fewer than its positions). The last stage verifies them against the model's own choices at
    /// those positions (greedy: equal to the argmax; sampling: standard speculative sampling against a point-mass draft,
    /// with draws keyed by the token's index <see cref="Step"/> + i) and reports the tokens it accepted plus the model's
    /// next one in <see cref="TokenResult.Accepted"/>. Every stage caches all positions; the coordinator's next step starts
    /// at the first rejected one (<see cref="StartPosition"/>), which truncates them away. Empty: an ordinary step.
    /// </summary>
    [Key(16)] public int[] Draft { get; init; } = [];

    /// <summary>
    /// Draft-model speculation: the token ids of the step's positions before <see cref="Draft"/> (from
    /// <see cref="StartPosition"/>; what the first stage gets in <see cref="Input"/>), which the last stage — receiving
    /// only hidden states — needs to extend its draft model's cache: exactly those positions, or empty (no draft model asked).
    /// </summary>
    [Key(17)] public int[] DraftContext { get; init; } = [];

    /// <summary>
    /// Draft-model speculation: how many tokens the last stage's draft model proposes after this step's accepted ones,
    /// returned in <see cref="TokenResult.Drafted"/> for the next step's <see cref="Draft"/> (0 … <see cref="ProtocolInfo.MaxDraftTokens"/>;
    /// 0: none). A last stage without the draft model ignores it.
    /// </summary>
    [Key(18)] public int DraftCount { get; init; }
}

/// <summary>
/// What the last stage reports besides the sampled token: the log-softmax of the model's raw logits (before
/// temperature, top-k and top-p) at the sampled token, the <see cref="Top"/> most likely tokens, and for a scored
/// input (echo) the same at every input position but the last.
/// </summary>
/// <remarks>Keys 0–1, append-only.</remarks>
[MessagePackObject]
public sealed record LogprobsRequest
{
    /// <summary>How many of the most likely tokens to report per position (0 … <see cref="ProtocolInfo.MaxTopLogprobs"/>).</summary>
    [Key(0)] public int Top { get; init; }

    /// <summary>
    /// The token that follows each input position but the last (input position i is followed by element i), whose
    /// log-probability is reported in <see cref="TokenResult.InputLogprobs"/>; empty for none. Otherwise exactly one
    /// fewer than the step's positions.
    /// </summary>
    [Key(1)] public int[] ScoredTokenIds { get; init; } = [];
}

/// <summary>The log-probabilities of one position: the chosen (sampled or scored) token's and the most likely tokens'.</summary>
/// <remarks>Keys 0–2, append-only.</remarks>
[MessagePackObject]
public sealed record TokenLogprobs
{
    /// <summary>Log-probability of the chosen token.</summary>
    [Key(0)] public float Logprob { get; init; }

    /// <summary>The most likely tokens, most likely first.</summary>
    [Key(1)] public int[] TopIds { get; init; } = [];

    /// <summary>Their log-probabilities, element for element.</summary>
    [Key(2)] public float[] TopLogprobs { get; init; } = [];
}

/// <summary>Which transformer layers' outputs a step captures, and at which of its positions.</summary>
/// <remarks>Keys 0–1, append-only.</remarks>
[MessagePackObject]
public sealed record HiddenStatesRequest
{
    /// <summary>Layers (0-based, strictly increasing) whose output — before the final LayerNorm — is captured.</summary>
    [Key(0)] public int[] Layers { get; init; } = [];

    /// <summary>True: every position of the step; false: its last position only.</summary>
    [Key(1)] public bool AllPositions { get; init; }
}

/// <summary>The output of one transformer layer for a step's positions: f32 [positions, hidden].</summary>
/// <remarks>Keys 0–1, append-only.</remarks>
[MessagePackObject]
public sealed record LayerHiddenStates
{
    /// <summary>The layer (0-based).</summary>
    [Key(0)] public int Layer { get; init; }

    /// <summary>Its output, <see cref="WireDType.F32"/> [positions, hidden].</summary>
    [Key(1)] public WireTensor Data { get; init; } = WireTensor.Empty;
}

/// <summary>
/// Last stage → coordinator: the token a step produced. A one-hop route whose layers end before the model's last layer
/// (a spot check's shadow session) answers with <see cref="TokenId"/> −1 and its fingerprint.
/// </summary>
/// <remarks>Keys 0–10, append-only.</remarks>
[MessagePackObject]
public sealed record TokenResult : IMessage
{
    /// <summary>Job of the step.</summary>
    [Key(0)] public long JobId { get; init; }

    /// <summary>Session of the step.</summary>
    [Key(1)] public long SessionId { get; init; }

    /// <summary>Step index (see <see cref="ForwardRequest.Step"/>).</summary>
    [Key(2)] public int Step { get; init; }

    /// <summary>The sampled token id; −1 when the route ended before the last layer (a shadow session).</summary>
    [Key(3)] public int TokenId { get; init; }

    /// <summary>Per-stage timings in route order, the last stage's included.</summary>
    [Key(4)] public StageTiming[] Timings { get; init; } = [];

    /// <summary>The sampled token's log-probabilities, when <see cref="ForwardRequest.Logprobs"/> asked for them; else null.</summary>
    [Key(5)] public TokenLogprobs? Logprobs { get; init; }

    /// <summary>One per <see cref="LogprobsRequest.ScoredTokenIds"/>, in order (empty when none were scored).</summary>
    [Key(6)] public TokenLogprobs[] InputLogprobs { get; init; } = [];

    /// <summary>Every layer <see cref="ForwardRequest.HiddenStates"/> asked for, in layer order (empty when none).</summary>
    [Key(7)] public LayerHiddenStates[] HiddenStates { get; init; } = [];

    /// <summary>Per-stage fingerprints in route order, the last stage's included.</summary>
    [Key(8)] public StageFingerprint[] Fingerprints { get; init; } = [];

    /// <summary>
    /// For a step that verified a <see cref="ForwardRequest.Draft"/>: the tokens it produced, in order — the drafted tokens
    /// it accepted (a prefix of the draft), then the model's own next token; the first is <see cref="TokenId"/>. Empty for
    /// an ordinary step (its one token is <see cref="TokenId"/>).
    /// </summary>
    [Key(9)] public int[] Accepted { get; init; } = [];

    /// <summary>
    /// When the step asked for <see cref="ForwardRequest.DraftCount"/> and this last stage holds the draft model: the tokens
    /// it drafted to follow the step's last produced token, for the next step to verify; empty otherwise.
    /// </summary>
    [Key(10)] public int[] Drafted { get; init; } = [];
}

/// <summary>Any stage → coordinator: a step could not be completed (the stage that failed, or could not reach the next hop, reports it).</summary>
/// <remarks>Keys 0–5, append-only.</remarks>
[MessagePackObject]
public sealed record StepFailed : IMessage
{
    /// <summary>Job of the step.</summary>
    [Key(0)] public long JobId { get; init; }

    /// <summary>Session of the step.</summary>
    [Key(1)] public long SessionId { get; init; }

    /// <summary>Step index.</summary>
    [Key(2)] public int Step { get; init; }

    /// <summary>Node reporting the failure.</summary>
    [Key(3)] public int NodeId { get; init; }

    /// <summary>Machine-readable cause (e.g. <see cref="ErrorCode.NextHopUnreachable"/>, <see cref="ErrorCode.UnknownSession"/>).</summary>
    [Key(4)] public ErrorCode Code { get; init; }

    /// <summary>Human-readable cause.</summary>
    [Key(5)] public string Message { get; init; } = "";
}

/// <summary>Coordinator → stage: free the session's KV cache. Idempotent; unknown sessions are ignored.</summary>
/// <remarks>Keys 0, append-only.</remarks>
[MessagePackObject]
public sealed record CloseSession : IMessage
{
    /// <summary>Session to close.</summary>
    [Key(0)] public long SessionId { get; init; }
}

/// <summary>Generic positive reply to a request (its envelope's CorrelationId names the request).</summary>
/// <remarks>No keys yet; append-only.</remarks>
[MessagePackObject]
public sealed record Ack : IMessage;

/// <summary>
/// Generic negative reply (its envelope's CorrelationId names the message it answers). The transport
/// also sends one with <see cref="ErrorCode.Overloaded"/> when it drops an inbound message because its queue is full.
/// </summary>
/// <remarks>Keys 0–1, append-only.</remarks>
[MessagePackObject]
public sealed record ErrorReply : IMessage
{
    /// <summary>Machine-readable cause.</summary>
    [Key(0)] public ErrorCode Code { get; init; }

    /// <summary>Human-readable cause.</summary>
    [Key(1)] public string Message { get; init; } = "";
}
