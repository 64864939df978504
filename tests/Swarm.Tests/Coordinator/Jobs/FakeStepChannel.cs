using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Swarm.Coordinator.Jobs;
using Swarm.Protocol;
using Swarm.Transport;

namespace Swarm.Tests.Coordinator.Jobs;

/// <summary>
/// An in-memory <see cref="IStepChannel"/>: records every message with the fake clock's time, and answers each step
/// synchronously, inside <see cref="Send"/>, with whatever <see cref="Answer"/> returns (null: the route stays silent).
/// The default answer is a pipeline that samples token 100 + step and reports 1 ms per stage.
/// </summary>
internal sealed class FakeStepChannel(TimeProvider time) : IStepChannel
{
    private readonly ConcurrentDictionary<long, Action<IMessage>> _jobs = new();
    private readonly Lock _gate = new();
    private readonly List<SentMessage> _sent = [];
    private readonly List<(Func<ForwardRequest, bool> Match, TaskCompletionSource<ForwardRequest> Seen)> _waiters = [];

    /// <summary>A message the coordinator sent, with the fake time it was sent at.</summary>
    public sealed record SentMessage(int NodeId, IMessage Message, long SessionId, DateTimeOffset At);

    /// <summary>The reply to a step, given the step; null for silence.</summary>
    public Func<ForwardRequest, IMessage?> Answer { get; set; } = r => TokenFor(r, 100 + r.Step);

    /// <summary>Nodes whose connection is gone: sending to them throws.</summary>
    public ConcurrentDictionary<int, bool> Disconnected { get; } = new();

    public event Action<int>? NodeLost;

    /// <summary>Everything sent, in order.</summary>
    public IReadOnlyList<SentMessage> Sent { get { lock (_gate) return [.. _sent]; } }

    /// <summary>The steps sent (to first hops), in order.</summary>
    public IReadOnlyList<ForwardRequest> Steps => [.. Sent.Select(s => s.Message).OfType<ForwardRequest>()];

    /// <summary>(node, session) of every <see cref="CloseSession"/> sent, in order.</summary>
    public IReadOnlyList<(int Node, long Session)> Closes =>
        [.. Sent.Where(s => s.Message is CloseSession).Select(s => (s.NodeId, ((CloseSession)s.Message).SessionId))];

    public IDisposable Subscribe(long jobId, Action<IMessage> onReply)
    {
        _jobs[jobId] = onReply;
        return new Unsubscribe(() => _jobs.TryRemove(jobId, out _));
    }

    public void Send(int nodeId, IMessage message, long sessionId)
    {
        if (Disconnected.ContainsKey(nodeId)) throw new PeerDisconnectedException($"node {nodeId} is not connected");
        List<TaskCompletionSource<ForwardRequest>> seen = [];
        lock (_gate)
        {
            _sent.Add(new SentMessage(nodeId, message, sessionId, time.GetUtcNow()));
            if (message is ForwardRequest step)
                for (int i = _waiters.Count - 1; i >= 0; i--)
                    if (_waiters[i].Match(step)) { seen.Add(_waiters[i].Seen); _waiters.RemoveAt(i); }
        }
        if (message is not ForwardRequest request) return;
        foreach (var s in seen) s.TrySetResult(request);
        if (Answer(request) is { } reply) Deliver(request.JobId, reply);
    }

    /// <summary>Delivers a reply to the job's inbox, as the coordinator's transport would.</summary>
    public void Deliver(long jobId, IMessage reply)
    {
        if (_jobs.TryGetValue(jobId, out var inbox)) inbox(reply);
    }

    /// <summary>Announces that a node died or left.</summary>
    public void LoseNode(int nodeId) => NodeLost?.Invoke(nodeId);

    /// <summary>Completes when a step matching <paramref name="match"/> is sent (or at once if one was).</summary>
    public Task<ForwardRequest> StepSentAsync(Func<ForwardRequest, bool> match)
    {
        var seen = new TaskCompletionSource<ForwardRequest>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate)
        {
            if (_sent.Select(s => s.Message).OfType<ForwardRequest>().FirstOrDefault(match) is { } already) seen.TrySetResult(already);
            else _waiters.Add((match, seen));
        }
        return seen.Task;
    }

    /// <summary>The token a pipeline would send back for <paramref name="request"/>, with 1 ms per stage.</summary>
    public static TokenResult TokenFor(ForwardRequest request, int token) => new()
    {
        JobId = request.JobId, SessionId = request.SessionId, Step = request.Step, TokenId = token,
        Timings = [.. request.Route.Select(h => new StageTiming { NodeId = h.NodeId, Milliseconds = 1 })],
    };

    /// <summary>A failure of <paramref name="request"/> reported by <paramref name="nodeId"/>.</summary>
    public static StepFailed FailureOf(ForwardRequest request, int nodeId, ErrorCode code, string message) => new()
    {
        JobId = request.JobId, SessionId = request.SessionId, Step = request.Step, NodeId = nodeId, Code = code, Message = message,
    };

    /// <summary>The token ids a first-stage input carries.</summary>
    public static int[] TokenIds(ForwardRequest request) =>
        [.. MemoryMarshal.Cast<byte, long>(request.Input.Data.Span).ToArray().Select(t => (int)t)];

    private sealed class Unsubscribe(Action dispose) : IDisposable
    {
        public void Dispose() => dispose();
    }
}
