using Swarm.Protocol;

namespace Swarm.Coordinator.Jobs;

/// <summary>
/// The jobs' link to the nodes: sends a message to a node over its control connection (a step to the first hop of a
/// route, <see cref="CloseSession"/> to every hop) and delivers the replies to a job's steps (<see cref="TokenResult"/>,
/// <see cref="StepFailed"/>). The coordinator's transport implements it; unit tests use an in-memory fake.
/// </summary>
internal interface IStepChannel
{
    /// <summary>Calls <paramref name="onReply"/> with every reply to a step of <paramref name="jobId"/> until disposed.</summary>
    IDisposable Subscribe(long jobId, Action<IMessage> onReply);

    /// <summary>Sends <paramref name="message"/> to node <paramref name="nodeId"/> in an envelope of session <paramref name="sessionId"/>.</summary>
    /// <exception cref="Swarm.Transport.PeerDisconnectedException">The node is not connected.</exception>
    void Send(int nodeId, IMessage message, long sessionId);

    /// <summary>Raised with a node's id when it is confirmed dead or has left.</summary>
    event Action<int>? NodeLost;
}
