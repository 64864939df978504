using Swarm.Coordinator.Jobs;
using Swarm.Protocol;

namespace Swarm.Coordinator.Service;

/// <summary>The jobs' <see cref="IStepChannel"/> over the coordinator's node connections.</summary>
internal sealed class CoordinatorStepChannel(SwarmCoordinator swarm) : IStepChannel
{
    /// <inheritdoc/>
    public IDisposable Subscribe(long jobId, Action<IMessage> onReply) => swarm.Subscribe(jobId, onReply);

    /// <inheritdoc/>
    /// <remarks>The envelope carries the current activity (the step's span) as its trace context.</remarks>
    public void Send(int nodeId, IMessage message, long sessionId) => swarm.SendToNode(nodeId, Envelope.Create(message, sessionId));

    /// <inheritdoc/>
    public event Action<int>? NodeLost
    {
        add => swarm.NodeLost += value;
        remove => swarm.NodeLost -= value;
    }
}
