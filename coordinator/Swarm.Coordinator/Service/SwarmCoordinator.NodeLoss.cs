using Swarm.Coordinator.Verification;

namespace Swarm.Coordinator.Service;

/// <summary>Losing a node: confirmed dead, departed, or banned by a spot check.</summary>
internal sealed partial class SwarmCoordinator
{
    /// <summary>Nodes caught by spot checks, and the identities refused for the ban time.</summary>
    public BanBoard Bans { get; }

    /// <summary>Forgets a lost node's live figures, re-vouches the member keys, re-covers its layers and tells the jobs.</summary>
    private void Lost(int id)
    {
        _live.TryRemove(id, out _);
        HopPaths.Forget(id);
        VouchForMembers();
        Control.Lost(id);
        NodeLost?.Invoke(id);
    }

    /// <summary>
    /// A spot check banned a node: its control connection is dropped (it re-registers and is refused by its key for the
    /// ban time) and it is handled as lost — its sessions re-route, its layers are re-covered.
    /// </summary>
    private void OnBanned(NodeBan ban)
    {
        LogBannedNode(ban.NodeId, ban.Reason);
        lock (_placementGate)
        {
            if (_nodePeers.TryRemove(ban.NodeId, out var peer))
            {
                _peerNodes.TryRemove(peer.Id, out _);
                peer.Disconnect("banned: a spot check caught it returning wrong results");
            }
            Lost(ban.NodeId);
        }
    }
}
