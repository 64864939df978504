using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Swarm.Protocol;
using Swarm.Transport.Nat;

namespace Swarm.Node;

/// <summary>
/// A node's relay for others (<c>swarm node --relay</c>): opens a relayed hop (<see cref="RelayAllocation"/>: two UDP
/// ports, one per side, each forwarding only its registered node's datagrams, byte for byte) when the coordinator asks
/// (<see cref="RelayControl"/>), closes it when told or when it goes silent (telling the coordinator), and counts what it
/// carried. The two nodes' Noise channel runs end to end through it: it sees ciphertext only. Serves only when the
/// coordinator accepted the offer (<see cref="Welcome.RelayAccepted"/>: the node is reachable directly).
/// </summary>
internal sealed class VolunteerRelay : IDisposable
{
    private readonly UdpRelay _relay;
    private readonly Action<RelayControl> _tellCoordinator;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<long, RelayAllocation> _hops = new();
    private volatile bool _accepted;

    /// <param name="bind">Address of the hops' sockets (the node's listen address; a wildcard serves every address).</param>
    /// <param name="tellCoordinator">Sends a message to the coordinator (a hop that went silent).</param>
    /// <param name="logger">Where hops opened and closed are logged.</param>
    /// <param name="maxHops">Hops open at once; beyond it an Open is refused.</param>
    public VolunteerRelay(IPAddress bind, Action<RelayControl> tellCoordinator, ILogger logger, int maxHops = 256)
    {
        _relay = new UdpRelay(bind, UdpRelay.DefaultIdleTimeout, maxHops);
        _tellCoordinator = tellCoordinator;
        _logger = logger;
        _relay.Expired += OnExpired;
    }

    /// <summary>True once the coordinator accepted this node as a relay (set at each registration).</summary>
    public bool Accepted => _accepted;

    /// <summary>
    /// A registration's answer: whether the coordinator uses this node as a relay. The hops of an earlier registration are
    /// closed (a restarted coordinator knows none of them, and numbers its hops afresh).
    /// </summary>
    public void Registered(bool accepted)
    {
        foreach (var hopId in _hops.Keys)
            if (_hops.TryRemove(hopId, out var stale)) Close(hopId, stale, "registered with the coordinator again");
        _accepted = accepted;
    }

    /// <summary>What this relay carried since start.</summary>
    public RelayUsage Usage => new() { Hops = _relay.Count, Datagrams = _relay.DatagramsForwarded, Bytes = _relay.BytesForwarded };

    /// <summary>Handles the coordinator's <paramref name="message"/>; returns the reply to an Open (null for anything else).</summary>
    public RelayControl? Handle(RelayControl message)
    {
        ArgumentNullException.ThrowIfNull(message);
        switch (message.Action)
        {
            case RelayControlAction.Open:
                return Open(message);
            case RelayControlAction.Close:
                if (_hops.TryRemove(message.HopId, out var closing)) Close(message.HopId, closing, "the coordinator closed it");
                return null;
            default:
                return null;
        }
    }

    private RelayControl Open(RelayControl open)
    {
        if (!_accepted) return Refuse(open.HopId, "this node does not relay (started without --relay, or not reachable directly)");
        if (!IPAddress.TryParse(open.Upstream, out var upstream) || !IPAddress.TryParse(open.Downstream, out var downstream))
            return Refuse(open.HopId, "the hop's addresses do not parse");
        RelayAllocation allocation;
        try { allocation = _relay.Allocate(upstream, downstream); }
        catch (Exception e) when (e is InvalidOperationException or SocketException) { return Refuse(open.HopId, e.Message); }
        if (!_hops.TryAdd(open.HopId, allocation))
        {
            _relay.Release(allocation);
            return Refuse(open.HopId, $"hop {open.HopId} is already open");
        }
        _logger.RelayHopOpened(open.HopId, allocation.UpstreamSide.Port, upstream.ToString(), allocation.DownstreamSide.Port, downstream.ToString());
        return new RelayControl
        {
            Action = RelayControlAction.Opened, HopId = open.HopId,
            UpstreamPort = allocation.UpstreamSide.Port, DownstreamPort = allocation.DownstreamSide.Port,
        };
    }

    private static RelayControl Refuse(long hopId, string reason) => new() { Action = RelayControlAction.Closed, HopId = hopId, Reason = reason };

    private void Close(long hopId, RelayAllocation allocation, string why)
    {
        _relay.Release(allocation);
        _logger.RelayHopClosed(hopId, why, allocation.DatagramsForwarded, allocation.BytesForwarded);
    }

    private void OnExpired(RelayAllocation allocation)
    {
        foreach (var (hopId, hop) in _hops)
        {
            if (!ReferenceEquals(hop, allocation) || !_hops.TryRemove(hopId, out _)) continue;
            _logger.RelayHopClosed(hopId, "it went silent", allocation.DatagramsForwarded, allocation.BytesForwarded);
            _tellCoordinator(new RelayControl { Action = RelayControlAction.Closed, HopId = hopId, Reason = "the relayed hop went silent" });
        }
    }

    /// <summary>Closes every hop.</summary>
    public void Dispose()
    {
        _relay.Expired -= OnExpired;
        _relay.Dispose();
    }
}
