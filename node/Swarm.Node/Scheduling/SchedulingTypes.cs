using Swarm.Protocol;

namespace Swarm.Node.Scheduling;

/// <summary>One step queued in a <see cref="BatchScheduler{T}"/>: its place in the session and how far it has run.</summary>
/// <typeparam name="T">What the executor keeps with the step (its input, its request); the scheduler never looks at it.</typeparam>
internal sealed class ScheduledStep<T>
{
    internal ScheduledStep(long sessionId, int startPosition, int tokens, long sequence, T payload)
    {
        SessionId = sessionId; StartPosition = startPosition; Tokens = tokens; Sequence = sequence; Payload = payload;
    }

    /// <summary>The session the step belongs to.</summary>
    public long SessionId { get; }
    /// <summary>Position of the step's first token in the session.</summary>
    public int StartPosition { get; }
    /// <summary>New positions the step brings (1 for a decode, the prompt length for a prefill).</summary>
    public int Tokens { get; }
    /// <summary>Arrival order among all steps of the scheduler (FIFO tie-break).</summary>
    public long Sequence { get; }
    /// <summary>The executor's data for this step.</summary>
    public T Payload { get; }
    /// <summary>Positions already run (earlier prefill chunks).</summary>
    public int Done { get; internal set; }
    /// <summary>Positions still to run.</summary>
    public int Remaining => Tokens - Done;
    /// <summary>True once the session's cache was cut back to <see cref="StartPosition"/> (a retried or replayed step).</summary>
    internal bool Prepared { get; set; }
}

/// <summary>Positions [<paramref name="Offset"/>, <paramref name="Offset"/> + <paramref name="Count"/>) of a step, run in one iteration.</summary>
internal readonly record struct PlannedChunk<T>(ScheduledStep<T> Step, int Offset, int Count)
{
    /// <summary>True when this chunk is the step's last (on the last stage: the one that needs logits).</summary>
    public bool Completes => Offset + Count == Step.Tokens;
}

/// <summary>A step the scheduler gave up on, and why.</summary>
internal readonly record struct FailedStep<T>(ScheduledStep<T> Step, StepException Error);

/// <summary>
/// What one iteration runs: chunks of steps of different sessions, all on the same layer range, within the token
/// budget; and the steps that failed while planning (preempted sessions, gaps in a session's positions).
/// </summary>
internal sealed class IterationPlan<T>(LayerRange range, IReadOnlyList<PlannedChunk<T>> chunks, IReadOnlyList<FailedStep<T>> failed)
{
    /// <summary>The layer range every chunk runs through.</summary>
    public LayerRange Range { get; } = range;
    /// <summary>Chunks to run, in batch order.</summary>
    public IReadOnlyList<PlannedChunk<T>> Chunks { get; } = chunks;
    /// <summary>Steps that failed while planning; the executor reports them.</summary>
    public IReadOnlyList<FailedStep<T>> Failed { get; } = failed;
    /// <summary>New positions the iteration runs.</summary>
    public int Tokens => Chunks.Sum(c => c.Count);
}

/// <summary>Kinds of <see cref="KvChange"/>.</summary>
internal enum KvChangeKind
{
    /// <summary>Hold blocks for <see cref="KvChange.Length"/> positions (allocate whole blocks as needed).</summary>
    Reserve,
    /// <summary>Forget positions from <see cref="KvChange.Length"/> on and return blocks no longer needed.</summary>
    Truncate,
    /// <summary>The session is gone: return all its blocks.</summary>
    Release,
}

/// <summary>A change to a session's KV blocks, decided by the scheduler and applied by the executor to its block pool in order.</summary>
internal readonly record struct KvChange(KvChangeKind Kind, long SessionId, int Length);

/// <summary>A session as the scheduler sees it.</summary>
/// <param name="Length">Positions cached.</param>
/// <param name="Blocks">KV blocks held.</param>
/// <param name="Admitted">False while it waits for blocks.</param>
/// <param name="QueuedSteps">Steps queued here.</param>
internal readonly record struct SessionView(LayerRange Layers, int Length, int Blocks, bool Admitted, int QueuedSteps);
