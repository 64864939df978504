using MessagePack;

namespace Swarm.Protocol;

/// <summary>
/// First message of a node after it connects to the coordinator. Answered with <see cref="Welcome"/> or <see cref="Refused"/>.
/// </summary>
/// <remarks>Keys 0–14, append-only.</remarks>
[MessagePackObject]
public sealed record Hello : IMessage
{
    /// <summary>Operator-chosen node name (unique per swarm is advisable, not required).</summary>
    [Key(0)] public string NodeName { get; init; } = "";

    /// <summary>The node's <see cref="ProtocolInfo.Version"/>.</summary>
    [Key(1)] public int ProtocolVersion { get; init; } = ProtocolInfo.Version;

    /// <summary>Bytes the node may use for weights plus KV caches.</summary>
    [Key(2)] public long MemoryBudgetBytes { get; init; }

    /// <summary>Compute device as TorchSharp spells it: "cpu", "cuda:0".</summary>
    [Key(3)] public string Device { get; init; } = "cpu";

    /// <summary>CPU threads the node uses for compute.</summary>
    [Key(4)] public int Threads { get; init; }

    /// <summary>
    /// Measured batch-1 decode throughput in <b>layer·tokens per second</b>: how many (layer, token)
    /// forward evaluations the node completes per second. A node that decodes t tokens/s through a full
    /// model of L layers reports t·L; one that runs k layers at t tokens/s reports t·k. Dividing by a
    /// range's layer count gives the tokens/s that node would reach on that range.
    /// </summary>
    [Key(5)] public double LayerTokensPerSecond { get; init; }

    /// <summary>Range the operator pinned with <c>--layers A:B</c>; null lets the coordinator choose.</summary>
    [Key(6)] public LayerRange? PinnedRange { get; init; }

    /// <summary>Range whose weights the node already holds in memory (e.g. after a coordinator restart); null if none.</summary>
    [Key(7)] public LayerRange? HeldRange { get; init; }

    /// <summary>Data-plane endpoint "host:port" where the node listens for node-to-node traffic.</summary>
    [Key(8)] public string DataEndpoint { get; init; } = "";

    /// <summary>
    /// Identity of the model the node loads (e.g. a hash of config.json plus weight shapes); the
    /// coordinator refuses a node whose model differs from the swarm's. Empty if unknown.
    /// </summary>
    [Key(9)] public string ModelId { get; init; } = "";

    /// <summary>
    /// True when the node serves the tensors it fetched to other nodes (<see cref="TensorRequest"/>); false when it
    /// was started with <c>--no-share</c> (or predates weight sharing). Only sharing nodes are named in
    /// <see cref="AssignRange.Peers"/>.
    /// </summary>
    [Key(10)] public bool SharesWeights { get; init; }

    /// <summary>
    /// Bytes one transformer layer takes on this node as it stores it (its <c>--weights</c> format: an int8 node about half
    /// a bf16 one); placement counts these. 0 from a node that does not say: placement then assumes f32.
    /// </summary>
    [Key(11)] public long LayerWeightBytes { get; init; }

    /// <summary>KV-cache bytes one token costs in one layer on this node (its compute dtype); 0 when not said (f32 assumed).</summary>
    [Key(12)] public long KvBytesPerTokenPerLayer { get; init; }

    /// <summary>
    /// True when the node was started with <c>--relay</c>: it offers to relay hops between other nodes whose punching
    /// failed (<see cref="RelayControl"/>). The coordinator takes the offer only from a node it found reachable
    /// (<see cref="Welcome.RelayAccepted"/>).
    /// </summary>
    [Key(13)] public bool OffersRelay { get; init; }

    /// <summary>
    /// Identity of the draft model the node holds for speculative decoding (<c>--draft-model</c>; see
    /// <c>DraftModelIdentity</c>: name and a hash of its config, tokenizer and tensor header), or empty for none. When it
    /// serves a last stage and this equals the coordinator's <c>--draft-model</c>, its steps draft the next tokens there.
    /// </summary>
    [Key(14)] public string DraftModel { get; init; } = "";
}

/// <summary>Coordinator's positive reply to <see cref="Hello"/>.</summary>
/// <remarks>Keys 0–6, append-only.</remarks>
[MessagePackObject]
public sealed record Welcome : IMessage
{
    /// <summary>Id the coordinator assigned to the node; used in routes, timings and failures.</summary>
    [Key(0)] public int NodeId { get; init; }

    /// <summary>How often the coordinator expects a <see cref="Heartbeat"/>, in milliseconds.</summary>
    [Key(1)] public int HeartbeatIntervalMs { get; init; }

    /// <summary>
    /// Where the swarm's weights come from when the coordinator was started with <c>--model-url</c>: the repository
    /// revision's resolve URL (<c>https://HOST/ORG/NAME/resolve/REV/</c>). A node without a local checkpoint fetches
    /// its assigned tensors from there, verified against <see cref="AssignRange.Tensors"/>. Empty when the swarm
    /// serves a local folder.
    /// </summary>
    [Key(2)] public string ModelSource { get; init; } = "";

    /// <summary>
    /// The member keys the coordinator vouches for as of this registration (this node's included), so the node accepts
    /// hops from them before any later <see cref="PeerKeys"/> arrives; null from a coordinator that vouches for none.
    /// </summary>
    [Key(3)] public PeerKeys? Members { get; init; }

    /// <summary>The endpoint "host:port" the coordinator sees the node's connection come from (after any NAT); empty from older coordinators.</summary>
    [Key(4)] public string ObservedEndpoint { get; init; } = "";

    /// <summary>
    /// True when an unsolicited probe from a fresh socket of the coordinator reached the node at
    /// <see cref="ObservedEndpoint"/>: peers can connect to it directly. False: it is behind a NAT or firewall, and peers
    /// reach it through a punched hole or a relay.
    /// </summary>
    [Key(5)] public bool Reachable { get; init; }

    /// <summary>
    /// True when the node offered to relay (<see cref="Hello.OffersRelay"/>) and the coordinator will use it as a relay
    /// (it is reachable directly); false otherwise — a node behind NAT cannot relay for others.
    /// </summary>
    [Key(6)] public bool RelayAccepted { get; init; }
}

/// <summary>
/// Coordinator → node: another node is about to connect to this one (the hop <see cref="PeerNodeId"/> → this node),
/// and this node is behind NAT. Send a few datagrams from the node's socket to <see cref="Target"/> — the peer's observed
/// endpoint (hole punching: the NAT then lets the peer's connection in) or, for a relayed hop, the relay's endpoint (the
/// relay learns where to forward to). Only the coordinator may send it.
/// </summary>
/// <remarks>Keys 0–2, append-only.</remarks>
[MessagePackObject]
public sealed record Introduce : IMessage
{
    /// <summary>The node that will connect.</summary>
    [Key(0)] public int PeerNodeId { get; init; }

    /// <summary>Where to send the datagrams, "host:port" (a wildcard host means the coordinator's own address).</summary>
    [Key(1)] public string Target { get; init; } = "";

    /// <summary>How the peer will come: <see cref="HopPath.Punched"/> (Target is the peer) or <see cref="HopPath.Relayed"/> (Target is the relay).</summary>
    [Key(2)] public HopPath Path { get; init; }
}

/// <summary>Coordinator's negative reply to <see cref="Hello"/>; the node should log it and stop.</summary>
/// <remarks>Keys 0–1, append-only.</remarks>
[MessagePackObject]
public sealed record Refused : IMessage
{
    /// <summary>Machine-readable reason.</summary>
    [Key(0)] public ErrorCode Code { get; init; }

    /// <summary>Human-readable reason, for the node operator's log.</summary>
    [Key(1)] public string Reason { get; init; } = "";
}

/// <summary>Coordinator → node: load layers [Start, End) and report <see cref="RangeReady"/> when done.</summary>
/// <remarks>Keys 0–3, append-only.</remarks>
[MessagePackObject]
public sealed record AssignRange : IMessage
{
    /// <summary>Layers to load; replaces any range the node held before.</summary>
    [Key(0)] public LayerRange Range { get; init; }

    /// <summary>Increasing id of this assignment, echoed in <see cref="RangeReady"/> so a late reply to an older assignment is recognised.</summary>
    [Key(1)] public long AssignmentId { get; init; }

    /// <summary>
    /// The manifest entries (name, SHA-256, length) of the tensors of <see cref="Range"/> — its layers, plus the
    /// embedding at the first and the final norm and head at the last — when the swarm has a
    /// <see cref="Welcome.ModelSource"/>; a node that fetches them checks every tensor against these before use.
    /// Empty for a swarm served from local folders. At most <see cref="ProtocolInfo.MaxAssignedTensors"/>.
    /// </summary>
    [Key(2)] public TensorDigestEntry[] Tensors { get; init; } = [];

    /// <summary>
    /// Data endpoints ("host:port") of sharing nodes that serve some of <see cref="Tensors"/>, best first: the node
    /// asks them (<see cref="TensorRequest"/>) before the model source's URL. At most <see cref="ProtocolInfo.MaxWeightPeers"/>.
    /// </summary>
    [Key(3)] public string[] Peers { get; init; } = [];
}

/// <summary>The SHA-256 and length of one tensor's bytes in the swarm's model source.</summary>
/// <remarks>Keys 0–2, append-only.</remarks>
[MessagePackObject]
public sealed record TensorDigestEntry
{
    /// <summary>HF tensor name, e.g. <c>gpt_neox.layers.3.attention.dense.weight</c>.</summary>
    [Key(0)] public string Name { get; init; } = "";

    /// <summary>Lower-case hex SHA-256 of the tensor's bytes.</summary>
    [Key(1)] public string Sha256 { get; init; } = "";

    /// <summary>Bytes of the tensor.</summary>
    [Key(2)] public long Length { get; init; }
}

/// <summary>Node → coordinator: the assigned range is loaded and served.</summary>
/// <remarks>Keys 0–3, append-only.</remarks>
[MessagePackObject]
public sealed record RangeReady : IMessage
{
    /// <summary>The range now served.</summary>
    [Key(0)] public LayerRange Range { get; init; }

    /// <summary>The <see cref="AssignRange.AssignmentId"/> this answers (0 for a pinned range loaded without assignment).</summary>
    [Key(1)] public long AssignmentId { get; init; }

    /// <summary>KV-cache bytes one token costs in one layer (2 · hidden · element size).</summary>
    [Key(2)] public long KvBytesPerTokenPerLayer { get; init; }

    /// <summary>Total tokens (summed over sessions) whose KV the node can hold for its range.</summary>
    [Key(3)] public long MaxKvTokens { get; init; }
}

/// <summary>Node → coordinator, periodically: liveness and load.</summary>
/// <remarks>Keys 0–12, append-only.</remarks>
[MessagePackObject]
public sealed record Heartbeat : IMessage
{
    /// <summary>Lifecycle state.</summary>
    [Key(0)] public NodeReadiness State { get; init; }

    /// <summary>Forward steps received and not yet finished.</summary>
    [Key(1)] public int InFlightSteps { get; init; }

    /// <summary>Open sessions (KV caches held).</summary>
    [Key(2)] public int Sessions { get; init; }

    /// <summary>KV tokens in use, summed over sessions.</summary>
    [Key(3)] public long KvTokensUsed { get; init; }

    /// <summary>KV tokens the node can hold (same as <see cref="RangeReady.MaxKvTokens"/> unless memory changed).</summary>
    [Key(4)] public long KvTokensCapacity { get; init; }

    /// <summary>Tokens per second processed over the last interval (all sessions, prefill and decode).</summary>
    [Key(5)] public double TokensPerSecond { get; init; }

    /// <summary>Range currently served; null while none is loaded.</summary>
    [Key(6)] public LayerRange? Range { get; init; }

    /// <summary>Paged KV cache blocks held by sessions.</summary>
    [Key(7)] public int KvBlocksUsed { get; init; }

    /// <summary>Paged KV cache blocks in the node's pool (its memory budget).</summary>
    [Key(8)] public int KvBlocksTotal { get; init; }

    /// <summary>New sessions waiting for KV blocks (admission control) on this node.</summary>
    [Key(9)] public int WaitingSessions { get; init; }

    /// <summary>
    /// The node's links to the next hops it handed steps to, each with its round-trip time as measured over that
    /// link; null (an older node) or empty when it handed none on. At most <see cref="MaxLinks"/>.
    /// </summary>
    [Key(10)] public LinkReport[]? Links { get; init; }

    /// <summary>
    /// The node's self-benchmark in layer·tokens per second (as <see cref="Hello.LayerTokensPerSecond"/>) when it was
    /// measured after registration — a node without a local checkpoint learns the model's shape only then; 0 when
    /// nothing changed since the <see cref="Hello"/>.
    /// </summary>
    [Key(11)] public double LayerTokensPerSecond { get; init; }

    /// <summary>What the node relayed for others since it started (a <c>--relay</c> volunteer); null from a node that relays nothing.</summary>
    [Key(12)] public RelayUsage? Relay { get; init; }

    /// <summary>Most links one heartbeat may carry (a node reports its most recently used ones).</summary>
    public const int MaxLinks = 256;
}

/// <summary>One node-to-node link a node measured: to whom, how the packets travel, and the round-trip time.</summary>
/// <remarks>Keys 0–2, append-only.</remarks>
[MessagePackObject]
public sealed record LinkReport
{
    /// <summary>The node at the other end (the next hop).</summary>
    [Key(0)] public int ToNodeId { get; init; }

    /// <summary>How the link's packets travel.</summary>
    [Key(1)] public HopPath Path { get; init; }

    /// <summary>Round-trip time over the link in milliseconds, as the transport's pings measure it.</summary>
    [Key(2)] public double RttMs { get; init; }
}

/// <summary>Node → coordinator: the node is leaving gracefully (SIGTERM); route no new work to it.</summary>
/// <remarks>Keys 0–1, append-only.</remarks>
[MessagePackObject]
public sealed record Leave : IMessage
{
    /// <summary>Why, for the log.</summary>
    [Key(0)] public string Reason { get; init; } = "";

    /// <summary>Milliseconds the node will keep serving in-flight steps before it disconnects.</summary>
    [Key(1)] public int GraceMs { get; init; }
}

/// <summary>
/// Coordinator → node: stop accepting new sessions, finish in-flight ones (state <see cref="NodeReadiness.Draining"/>),
/// e.g. before the node is given another range.
/// </summary>
/// <remarks>Keys 0, append-only.</remarks>
[MessagePackObject]
public sealed record Drain : IMessage
{
    /// <summary>Why, for the log.</summary>
    [Key(0)] public string Reason { get; init; } = "";
}

/// <summary>
/// Coordinator → node: the static public keys of the swarm's current members. A node accepts a connection from
/// another node (a hop handing on a step) only when that node proves one of these keys: the coordinator vouches for
/// its members. Sent to every node whenever membership changes; a node keeps the list with the highest
/// <see cref="Version"/> (lists travel unordered when large).
/// </summary>
/// <remarks>Keys 0–1, append-only.</remarks>
[MessagePackObject]
public sealed record PeerKeys : IMessage
{
    /// <summary>Increases with every list the coordinator sends; older lists are ignored.</summary>
    [Key(0)] public long Version { get; init; }

    /// <summary>The members' 32-byte X25519 public keys.</summary>
    [Key(1)] public byte[][] Keys { get; init; } = [];
}
