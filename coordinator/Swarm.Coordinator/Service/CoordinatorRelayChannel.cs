using Swarm.Coordinator.Nat;
using Swarm.Protocol;

namespace Swarm.Coordinator.Service;

/// <summary>The <see cref="IRelayControlChannel"/> to volunteer relay nodes over the coordinator's node connections.</summary>
internal sealed class CoordinatorRelayChannel(SwarmCoordinator swarm) : IRelayControlChannel
{
    /// <inheritdoc/>
    public Task<IMessage> RequestAsync(int nodeId, RelayControl request, TimeSpan timeout, CancellationToken cancellationToken) =>
        swarm.RequestFromNodeAsync(nodeId, request, timeout, cancellationToken);

    /// <inheritdoc/>
    public void Send(int nodeId, RelayControl message) => swarm.SendToNode(nodeId, Envelope.Create(message));
}
