using System.Threading.Channels;
using Swarm.Coordinator.Routing;
using Swarm.Protocol;

namespace Swarm.Coordinator.Jobs;

/// <summary>
/// One job's incoming replies, in arrival order: the <see cref="TokenResult"/>s and <see cref="StepFailed"/>s of its
/// steps, and — when a node of the route it currently watches is lost — a <see cref="StepFailed"/> with step −1 and
/// the watched session's id, so the step waiting on that route fails at once instead of at its timeout; the same when a
/// relayed link between two consecutive nodes of the route goes silent (<see cref="Nat.HopPathPlanner.LinkLost"/>).
/// Replies read while waiting for something else — a shadow's or an arbiter's (side sessions), or a lost-node notice
/// that arrived between steps — are kept (<see cref="Keep"/>, <see cref="TakeKept"/>) for whoever asks for them later,
/// across the job's sessions: a spot check is judged after its step was accepted, possibly on a later route.
/// Read on the job's loop only.
/// </summary>
internal sealed class JobReplyInbox : IDisposable
{
    private readonly Channel<IMessage> _replies = Channel.CreateUnbounded<IMessage>(new UnboundedChannelOptions { SingleReader = true });
    private readonly IStepChannel _channel;
    private readonly IDisposable _subscription;
    private readonly long _jobId;
    private readonly Nat.HopPathPlanner? _paths;
    private volatile Watched? _watched;

    private sealed record Watched(long SessionId, HashSet<int> Nodes, IReadOnlyList<int> Order);

    /// <summary>Most replies kept; the oldest go first (late replies of abandoned sessions nobody asks for).</summary>
    public const int MaxKept = 256;

    private readonly List<IMessage> _kept = [];

    /// <summary>Subscribes to the replies of <paramref name="jobId"/>, to lost nodes and (with <paramref name="paths"/>) to lost relayed links.</summary>
    public JobReplyInbox(IStepChannel channel, long jobId, Nat.HopPathPlanner? paths = null)
    {
        _channel = channel;
        _jobId = jobId;
        _paths = paths;
        _subscription = channel.Subscribe(jobId, m => _replies.Writer.TryWrite(m));
        channel.NodeLost += OnNodeLost;
        if (paths is not null) paths.LinkLost += OnLinkLost;
    }

    /// <summary>The replies.</summary>
    public ChannelReader<IMessage> Reader => _replies.Reader;

    /// <summary>Keeps a step's reply (<see cref="TokenResult"/> or <see cref="StepFailed"/>) read out of turn; anything else is dropped.</summary>
    public void Keep(IMessage reply)
    {
        if (reply is not (TokenResult or StepFailed)) return;
        _kept.Add(reply);
        if (_kept.Count > MaxKept) _kept.RemoveAt(0);
    }

    /// <summary>Moves every reply that has arrived into the kept ones, without waiting.</summary>
    public void KeepArrived()
    {
        while (_replies.Reader.TryRead(out var reply)) Keep(reply);
    }

    /// <summary>The first kept reply that <paramref name="match"/> accepts, removed; null when none.</summary>
    public IMessage? TakeKept(Func<IMessage, bool> match)
    {
        int i = _kept.FindIndex(m => match(m));
        if (i < 0) return null;
        var found = _kept[i];
        _kept.RemoveAt(i);
        return found;
    }

    /// <summary>From now on, a lost node of <paramref name="route"/> fails the step of <paramref name="sessionId"/>.</summary>
    public void Watch(long sessionId, Route route) => _watched = new Watched(sessionId, [.. route.NodeIds], [.. route.NodeIds]);

    /// <summary>Stops watching a route (its session was released).</summary>
    public void Unwatch(long sessionId)
    {
        if (_watched?.SessionId == sessionId) _watched = null;
    }

    private void OnNodeLost(int nodeId)
    {
        if (_watched is not { } w || !w.Nodes.Contains(nodeId)) return;
        _replies.Writer.TryWrite(new StepFailed
        {
            JobId = _jobId, SessionId = w.SessionId, Step = -1, NodeId = nodeId,
            Code = ErrorCode.NextHopUnreachable, Message = $"node {nodeId} left or died",
        });
    }

    private void OnLinkLost(int from, int to)
    {
        if (_watched is not { } w || !w.Order.Zip(w.Order.Skip(1)).Contains((from, to))) return;
        _replies.Writer.TryWrite(new StepFailed
        {
            JobId = _jobId, SessionId = w.SessionId, Step = -1, NodeId = to,
            Code = ErrorCode.NextHopUnreachable, Message = $"the relayed link from node {from} to node {to} went silent",
        });
    }

    /// <summary>Unsubscribes.</summary>
    public void Dispose()
    {
        _channel.NodeLost -= OnNodeLost;
        if (_paths is not null) _paths.LinkLost -= OnLinkLost;
        _subscription.Dispose();
        _replies.Writer.TryComplete();
    }
}
