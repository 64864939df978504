using MessagePack;

namespace Swarm.Protocol;

/// <summary>What a <see cref="RelayControl"/> asks or answers. Wire values: append only.</summary>
public enum RelayControlAction
{
    /// <summary>Coordinator → relay node (a request): open a relayed hop between <see cref="RelayControl.Upstream"/> and <see cref="RelayControl.Downstream"/>.</summary>
    Open = 1,
    /// <summary>Relay node → coordinator (the reply to <see cref="Open"/>): the hop is open on <see cref="RelayControl.UpstreamPort"/> and <see cref="RelayControl.DownstreamPort"/>.</summary>
    Opened = 2,
    /// <summary>Coordinator → relay node: close the hop (no longer used, or one of its nodes left).</summary>
    Close = 3,
    /// <summary>Relay node → coordinator: the hop is closed (it went silent), or — as the reply to <see cref="Open"/> — was refused (<see cref="RelayControl.Reason"/>).</summary>
    Closed = 4,
}

/// <summary>
/// The coordinator and a volunteer relay node (<c>swarm node --relay</c>) opening and closing relayed hops: the relay
/// binds two UDP ports per hop, one per side, and forwards the two nodes' datagrams byte for byte (the nodes' Noise
/// channel runs end to end through it: the relay sees ciphertext only). Only the coordinator may ask.
/// </summary>
/// <remarks>Keys 0–6, append-only.</remarks>
[MessagePackObject]
public sealed record RelayControl : IMessage
{
    /// <summary>What this message asks or answers.</summary>
    [Key(0)] public RelayControlAction Action { get; init; }

    /// <summary>The coordinator's id of the relayed hop (positive); every message about one hop carries it.</summary>
    [Key(1)] public long HopId { get; init; }

    /// <summary><see cref="RelayControlAction.Open"/>: the IP address the upstream node's datagrams come from (its NAT's public address).</summary>
    [Key(2)] public string Upstream { get; init; } = "";

    /// <summary><see cref="RelayControlAction.Open"/>: the IP address the downstream node's datagrams come from.</summary>
    [Key(3)] public string Downstream { get; init; } = "";

    /// <summary><see cref="RelayControlAction.Opened"/>: the relay's UDP port the upstream node connects to.</summary>
    [Key(4)] public int UpstreamPort { get; init; }

    /// <summary><see cref="RelayControlAction.Opened"/>: the relay's UDP port the downstream node punches toward.</summary>
    [Key(5)] public int DownstreamPort { get; init; }

    /// <summary><see cref="RelayControlAction.Closed"/>: why, for the logs.</summary>
    [Key(6)] public string Reason { get; init; } = "";
}

/// <summary>What a relay node carried for others since it started (<see cref="Heartbeat.Relay"/>).</summary>
/// <remarks>Keys 0–2, append-only.</remarks>
[MessagePackObject]
public sealed record RelayUsage
{
    /// <summary>Relayed hops open now.</summary>
    [Key(0)] public int Hops { get; init; }

    /// <summary>Datagrams forwarded, both directions, all hops.</summary>
    [Key(1)] public long Datagrams { get; init; }

    /// <summary>Bytes forwarded, both directions, all hops.</summary>
    [Key(2)] public long Bytes { get; init; }
}
