using TorchSharp;
using static TorchSharp.torch;

namespace Swarm.Model;

/// <summary>
/// One dedicated thread per tensor-parallel shard. <see cref="Run"/> hands body(s) to shard s's thread and returns
/// when all are done (exceptions propagate). Each thread runs in inference mode with its own libtorch intra-op
/// thread budget (set on that thread: OpenMP's thread count is per calling thread), so N shards on a CPU share the
/// cores instead of each spawning a full-width pool; on a GPU the thread is what keeps the shard's stream fed.
/// </summary>
internal sealed class ShardWorkers : IDisposable
{
    private readonly Thread[] _threads;
    private readonly SemaphoreSlim[] _go;
    private readonly CountdownEvent _done;
    private readonly object _gate = new();
    private readonly Exception?[] _errors;
    private readonly long[] _live;
    private Action<int>? _work;
    private volatile bool _stopping;

    public int Count => _threads.Length;
    /// <summary>Intra-op threads of each shard's thread.</summary>
    public int ThreadsPerShard { get; }

    /// <summary>
    /// TorchSharp's live-tensor count of each shard thread after its last job (diagnostics: tensors a shard creates and
    /// hands back are disposed by the caller's thread, so a leak shows as a growing sum with the caller's own count).
    /// </summary>
    public long[] LiveTensorCounts => (long[])_live.Clone();

    public ShardWorkers(int shards, int threadsPerShard)
    {
        ThreadsPerShard = Math.Max(1, threadsPerShard);
        _threads = new Thread[shards];
        _go = new SemaphoreSlim[shards];
        _errors = new Exception?[shards];
        _live = new long[shards];
        _done = new CountdownEvent(0);
        for (int i = 0; i < shards; i++)
        {
            int id = i;
            _go[i] = new SemaphoreSlim(0);
            _threads[i] = new Thread(() => Loop(id)) { IsBackground = true, Name = $"swarm-tp-shard-{id}" };
            _threads[i].Start();
        }
    }

    public void Run(Action<int> body)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_stopping, this);
            _work = body;
            Array.Clear(_errors);
            _done.Reset(_threads.Length);
            foreach (var g in _go) g.Release();
            _done.Wait();
            _work = null;
            var errors = _errors.Where(e => e is not null).ToArray();
            if (errors.Length > 0) throw new AggregateException("a tensor-parallel shard failed", errors!);
        }
    }

    private void Loop(int id)
    {
        torch.set_num_threads(ThreadsPerShard);
        using var inference = inference_mode();
        while (true)
        {
            _go[id].Wait();
            if (_stopping) return;
            try { _work!(id); }
            catch (Exception e) { _errors[id] = e; }
            finally
            {
                _live[id] = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
                _done.Signal();
            }
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_stopping) return;
            _stopping = true;
        }
        foreach (var g in _go) g.Release();
        foreach (var t in _threads) t.Join();
        foreach (var g in _go) g.Dispose();
        _done.Dispose();
    }
}
