using Swarm.Transport.Nat;

namespace Swarm.Coordinator.Nat;

/// <summary>
/// One relayed hop held open for a node pair: on the coordinator's own relay (<see cref="Local"/>) or on a volunteer
/// relay node (<see cref="RelayNodeId"/>). The upstream node connects to <see cref="UpstreamSide"/>, the downstream node
/// punches toward <see cref="DownstreamSide"/>.
/// </summary>
internal sealed class RelayLease
{
    private volatile bool _closed;

    /// <param name="hopId">The coordinator's id of the relayed hop (what <see cref="Swarm.Protocol.RelayControl.HopId"/> carries).</param>
    /// <param name="relayNodeId">The volunteer relay node; 0 for the coordinator's own relay.</param>
    /// <param name="relayName">The relay as operators see it: a node's name, or <c>coordinator</c>.</param>
    /// <param name="upstreamSide">"host:port" the upstream node connects to.</param>
    /// <param name="downstreamSide">"host:port" the downstream node punches toward.</param>
    /// <param name="local">The allocation on the coordinator's relay; null for a volunteer's.</param>
    public RelayLease(long hopId, int relayNodeId, string relayName, string upstreamSide, string downstreamSide, RelayAllocation? local = null)
    {
        HopId = hopId;
        RelayNodeId = relayNodeId;
        RelayName = relayName;
        UpstreamSide = upstreamSide;
        DownstreamSide = downstreamSide;
        Local = local;
    }

    /// <summary>What the relay's name is when it is the coordinator itself.</summary>
    public const string CoordinatorName = "coordinator";

    /// <summary>The coordinator's id of the relayed hop.</summary>
    public long HopId { get; }

    /// <summary>The volunteer relay node, or 0 for the coordinator's own relay.</summary>
    public int RelayNodeId { get; }

    /// <summary>The relay's name: a node's, or <see cref="CoordinatorName"/>.</summary>
    public string RelayName { get; }

    /// <summary>"host:port" the upstream node connects to (<see cref="Swarm.Protocol.Hop.Via"/>).</summary>
    public string UpstreamSide { get; }

    /// <summary>"host:port" the downstream node punches toward (<see cref="Swarm.Protocol.Introduce.Target"/>).</summary>
    public string DownstreamSide { get; }

    /// <summary>The allocation on the coordinator's relay, or null.</summary>
    public RelayAllocation? Local { get; }

    /// <summary>True until the hop is released, goes silent, or its relay node is lost.</summary>
    public bool IsOpen => !_closed && (Local?.IsOpen ?? true);

    /// <summary>Marks the hop closed (its relay went away, or it was released).</summary>
    public void MarkClosed() => _closed = true;
}
