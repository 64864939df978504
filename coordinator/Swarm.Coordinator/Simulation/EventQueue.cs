namespace Swarm.Coordinator.Simulation;

/// <summary>
/// The simulator's agenda: items ordered by their virtual time, and items due at the same time in the order they were
/// scheduled (first in, first out) — so a run depends only on its inputs, never on how the heap breaks ties.
/// </summary>
/// <typeparam name="T">What happens at a time.</typeparam>
public sealed class EventQueue<T>
{
    private readonly PriorityQueue<T, (TimeSpan At, long Sequence)> _heap = new();
    private long _sequence;

    /// <summary>Items waiting.</summary>
    public int Count => _heap.Count;

    /// <summary>Items scheduled so far (processed or not).</summary>
    public long Scheduled => _sequence;

    /// <summary>Schedules <paramref name="item"/> at virtual time <paramref name="at"/>.</summary>
    public void Schedule(TimeSpan at, T item) => _heap.Enqueue(item, (at, _sequence++));

    /// <summary>The earliest item (the first scheduled among equally early ones) and its time; false when empty.</summary>
    public bool TryDequeue(out TimeSpan at, out T item)
    {
        if (_heap.TryDequeue(out item!, out var key))
        {
            at = key.At;
            return true;
        }
        at = default;
        return false;
    }

    /// <summary>The time of the earliest item; null when empty.</summary>
    public TimeSpan? NextAt => _heap.TryPeek(out _, out var key) ? key.At : null;
}
