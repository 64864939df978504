using Swarm.Protocol;

namespace Swarm.Coordinator.Membership;

/// <summary>What a node announces when it registers.</summary>
internal sealed record NodeInfo
{
    /// <summary>Unique id of this node incarnation (a restarted process registers with a new id or re-registers).</summary>
    public required int Id { get; init; }

    /// <summary>Operator-chosen display name (<c>--name</c>).</summary>
    public required string Name { get; init; }

    /// <summary>
    /// Address peers use to reach the node, e.g. <c>127.0.0.1:7801</c>: the one it advertised, or — when it advertised
    /// none (it binds a wildcard address) — the one the coordinator sees its connection come from (its NAT's mapping).
    /// </summary>
    public required string Endpoint { get; init; }

    /// <summary>
    /// True when the node answered the coordinator's reachability probe at <see cref="Endpoint"/> (or it is on loopback):
    /// peers connect to it directly. False: it is behind NAT, and the hops to it are punched or relayed. Default: true.
    /// </summary>
    public bool Reachable { get; init; } = true;

    /// <summary>
    /// True when the node volunteers as a relay (<c>--relay</c>) and is <see cref="Reachable"/>: hops whose punching failed
    /// may be relayed through it (<see cref="Nat.RelayChooser"/>). Default: false.
    /// </summary>
    public bool OffersRelay { get; init; }

    /// <summary>Bytes the node may use for weights plus KV caches (<c>--memory</c>).</summary>
    public required long MemoryBudgetBytes { get; init; }

    /// <summary>Bytes of one layer's weights as the node stores them (<see cref="Swarm.Protocol.Hello.LayerWeightBytes"/>; 0: not said).</summary>
    public long LayerWeightBytes { get; init; }

    /// <summary>KV-cache bytes per token per layer on the node (<see cref="Swarm.Protocol.Hello.KvBytesPerTokenPerLayer"/>; 0: not said).</summary>
    public long KvBytesPerTokenPerLayer { get; init; }

    /// <summary>Device description, e.g. <c>cpu</c> or <c>cuda:0</c>.</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>Compute threads the node uses.</summary>
    public int Threads { get; init; } = 1;

    /// <summary>
    /// Measured decode throughput in <b>layer-tokens per second</b>: how many tokens per second the node
    /// pushes through ONE transformer layer at batch 1. A node holding k layers therefore moves
    /// <c>LayerThroughput / k</c> tokens per second through its whole range.
    /// </summary>
    public required double LayerThroughput { get; init; }

    /// <summary>Range fixed by the operator (<c>--layers A:B</c>); the planner never moves a pinned node.</summary>
    public LayerRange? PinnedRange { get; init; }

    /// <summary>
    /// The static public key the node proved in the handshake of its control connection: its identity. Routes carry
    /// it so the previous hop pins it; null only when the transport runs without encryption (benchmarks).
    /// </summary>
    public byte[]? Key { get; init; }

    /// <summary>The short name of <see cref="Key"/> (<c>swarm:…</c>) that names the node in logs, <c>/api/swarm</c> and traces.</summary>
    public string? KeyFingerprint => Key is null ? null : Swarm.Transport.Security.PeerKey.Fingerprint(Key);

    /// <summary>
    /// The fingerprint this node's <see cref="Name"/> was first seen with, when it differs from <see cref="Key"/>'s:
    /// another machine uses the name, or the node has a new identity file. Null when the name and key agree.
    /// </summary>
    public string? KeyChangedFrom { get; init; }

    /// <summary>The identity of the draft model the node holds (<see cref="Swarm.Protocol.Hello.DraftModel"/>), or empty.</summary>
    public string DraftModel { get; init; } = "";

    /// <summary>True when the node serves the tensors it fetched to other nodes (it fetches its weights and was not started with <c>--no-share</c>).</summary>
    public bool SharesWeights { get; init; }
}
