using System.Runtime.CompilerServices;
using System.Threading.Channels;

namespace Swarm.Node;

/// <summary>
/// A bounded queue from synchronous producers (the compute thread) to one asynchronous consumer (the hop forwarder).
/// <see cref="Write"/> returns at once while fewer than <see cref="Capacity"/> items wait and blocks (never spins)
/// otherwise — back-pressure instead of unbounded memory; the consumer reads with <see cref="ReadAllAsync"/>.
/// </summary>
internal sealed class BoundedHandoff<T>
{
    private readonly Channel<T> _channel = Channel.CreateUnbounded<T>(new UnboundedChannelOptions());
    // Free places. Never disposed: it exposes no wait handle, and a producer may still hold it during shutdown.
    private readonly SemaphoreSlim _space;

    /// <param name="capacity">Items that may wait before <see cref="Write"/> blocks (≥ 1).</param>
    public BoundedHandoff(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        Capacity = capacity;
        _space = new SemaphoreSlim(capacity, capacity);
    }

    /// <summary>Items that may wait before <see cref="Write"/> blocks.</summary>
    public int Capacity { get; }

    /// <summary>Items waiting.</summary>
    public int Count => _channel.Reader.Count;

    /// <summary>Queues <paramref name="item"/>, blocking while the queue is full. False when <see cref="Complete"/> was called (the item is not queued).</summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired while waiting (the item is not queued).</exception>
    public bool Write(T item, CancellationToken cancellationToken)
    {
        _space.Wait(cancellationToken);
        if (_channel.Writer.TryWrite(item)) return true;
        _space.Release();
        return false;
    }

    /// <summary>No more items: <see cref="ReadAllAsync"/> ends once the queued ones are read.</summary>
    public void Complete() => _channel.Writer.TryComplete();

    /// <summary>Every item, in order, until <see cref="Complete"/> and the queue is empty.</summary>
    public async IAsyncEnumerable<T> ReadAllAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await foreach (var item in _channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            _space.Release();
            yield return item;
        }
    }
}
