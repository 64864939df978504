using Swarm.Protocol;

namespace Swarm.Coordinator.Nat;

/// <summary>How the coordinator talks to volunteer relay nodes (over their control connections).</summary>
internal interface IRelayControlChannel
{
    /// <summary>Sends <paramref name="request"/> to node <paramref name="nodeId"/> and returns its reply.</summary>
    /// <exception cref="Swarm.Transport.PeerDisconnectedException">The node is not connected, or went away before replying.</exception>
    /// <exception cref="TimeoutException">No reply within <paramref name="timeout"/>.</exception>
    Task<IMessage> RequestAsync(int nodeId, RelayControl request, TimeSpan timeout, CancellationToken cancellationToken);

    /// <summary>Sends <paramref name="message"/> to node <paramref name="nodeId"/>, expecting no reply.</summary>
    /// <exception cref="Swarm.Transport.PeerDisconnectedException">The node is not connected.</exception>
    void Send(int nodeId, RelayControl message);
}
