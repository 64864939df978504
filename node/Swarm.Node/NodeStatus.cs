using Swarm.Protocol;

namespace Swarm.Node;

/// <summary>
/// The node's runtime figures, shared by its parts and read from any thread: its state, the id the coordinator gave
/// it, the steps it accepted and has not finished handing on, and the token positions it ran.
/// </summary>
internal sealed class NodeStatus
{
    private readonly Lock _gate = new();
    private volatile NodeReadiness _state = NodeReadiness.Idle;
    private int _nodeId, _inFlight;
    private long _tokensServed;
    private TaskCompletionSource? _idle;

    /// <summary>Idle, loading, ready or draining.</summary>
    public NodeReadiness State { get => _state; set => _state = value; }

    /// <summary>Id the coordinator gave this node (0 before registration).</summary>
    public int NodeId { get => Volatile.Read(ref _nodeId); set => Volatile.Write(ref _nodeId, value); }

    /// <summary>Steps accepted and not yet handed on (queued, running, or being sent).</summary>
    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>Token positions run through this node's layers.</summary>
    public long TokensServed => Interlocked.Read(ref _tokensServed);

    /// <summary>A step was accepted.</summary>
    public void StepAccepted()
    {
        lock (_gate) _inFlight++;
    }

    /// <summary>A step was handed on (or refused after all); wakes <see cref="WhenIdleAsync"/> when none is left.</summary>
    public void StepHandled()
    {
        lock (_gate)
        {
            if (--_inFlight > 0 || _idle is not { } idle) return;
            _idle = null;
            idle.TrySetResult();
        }
    }

    /// <summary>Adds <paramref name="positions"/> to <see cref="TokensServed"/>.</summary>
    public void AddTokens(long positions) => Interlocked.Add(ref _tokensServed, positions);

    /// <summary>Completes when no step is in flight.</summary>
    public Task WhenIdleAsync()
    {
        lock (_gate)
        {
            if (_inFlight <= 0) return Task.CompletedTask;
            return (_idle ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
        }
    }
}
