namespace Swarm.Model;

/// <summary>
/// A tiny fork-join pool of dedicated threads for splitting one small op across cores (batch-1 GEMV).
/// The caller runs part 0; each worker runs one other part; Run returns when all are done. Dedicated
/// threads (not the ThreadPool) keep the per-call cost to a few microseconds and free of pool jitter.
/// </summary>
public sealed class ComputePool : IDisposable
{
    private static readonly Lazy<ComputePool> _shared = new(() => new ComputePool(Environment.ProcessorCount - 1));

    /// <summary>Process-wide pool with one worker per extra core. <see cref="Configure"/> may resize it at start.</summary>
    public static ComputePool Shared => _current ?? _shared.Value;
    private static ComputePool? _current;

    /// <summary>Sets the number of threads used for parallel GEMV (workers = threads − 1). Call at start-up.</summary>
    public static void Configure(int threads)
    {
        var old = _current;
        _current = new ComputePool(Math.Max(0, threads - 1));
        old?.Dispose();
    }

    private readonly Thread[] _threads;
    private readonly SemaphoreSlim[] _start;
    private readonly CountdownEvent _done = new(0);
    private readonly object _gate = new();
    private Action<int>? _work;
    private volatile bool _stopping;
    private Exception? _error;

    public int Workers => _threads.Length;

    public ComputePool(int workers)
    {
        _threads = new Thread[workers];
        _start = new SemaphoreSlim[workers];
        for (int i = 0; i < workers; i++)
        {
            int id = i + 1;
            _start[i] = new SemaphoreSlim(0);
            _threads[i] = new Thread(() => Loop(id)) { IsBackground = true, Name = $"swarm-compute-{id}" };
            _threads[i].Start();
        }
    }

    /// <summary>Runs body(0 … parts−1); parts beyond the workers run on the caller. Exceptions propagate.</summary>
    public void Run(int parts, Action<int> body)
    {
        int helpers = Math.Min(parts - 1, _threads.Length);
        if (helpers <= 0)
        {
            for (int i = 0; i < parts; i++) body(i);
            return;
        }
        lock (_gate) // one fork-join at a time; other callers wait (they would compete for the same cores anyway)
        {
            _work = body;
            _error = null;
            _done.Reset(helpers);
            for (int i = 0; i < helpers; i++) _start[i].Release();
            body(0);
            for (int i = helpers + 1; i < parts; i++) body(i);
            _done.Wait();
            _work = null;
            if (_error is not null) throw new AggregateException(_error);
        }
    }

    private void Loop(int id)
    {
        // Inference-mode is per thread in libtorch; every op these workers run is inference.
        using var inference = TorchSharp.torch.inference_mode();
        while (true)
        {
            _start[id - 1].Wait();
            if (_stopping) return;
            try { _work!(id); }
            catch (Exception e) { _error = e; }
            finally { _done.Signal(); }
        }
    }

    public void Dispose()
    {
        _stopping = true;
        foreach (var s in _start) s.Release();
        foreach (var t in _threads) t.Join();
        foreach (var s in _start) s.Dispose();
        _done.Dispose();
    }
}
