using System.Diagnostics;

namespace Swarm.Model;

/// <summary>
/// A tiny fork-join pool of dedicated threads for splitting one small op across cores (batch-1 GEMV).
/// The caller runs part 0; each worker runs one other part; Run returns when all are done. Dedicated
/// threads (not the ThreadPool) keep the per-call cost to a few microseconds and free of pool jitter.
/// </summary>
/// <remarks>
/// A decode step forks four times per layer with ~0.1 ms of single-threaded work in between. A worker that
/// went to sleep after each part pays a futex wake-up per fork (tens of µs in a VM) while the caller idles at
/// the join, so workers spin for <see cref="SpinMicroseconds"/> after each part before blocking. The spin is
/// short enough that an idle node (between tokens) leaves its cores to other processes, and yields while it spins.
/// </remarks>
public sealed class ComputePool : IDisposable
{
    private static readonly Lazy<ComputePool> _shared = new(() => new ComputePool(Environment.ProcessorCount - 1));

    /// <summary>Process-wide pool with one worker per extra core. <see cref="Configure"/> may resize it at start.</summary>
    public static ComputePool Shared => _current ?? _shared.Value;
    private static ComputePool? _current;

    /// <summary>How long a worker busy-waits for the next part before it blocks.</summary>
    public const int SpinMicroseconds = 300;

    /// <summary>Sets the number of threads used for parallel GEMV (workers = threads − 1). Call at start-up.</summary>
    public static void Configure(int threads)
    {
        var old = _current;
        _current = new ComputePool(Math.Max(0, threads - 1));
        old?.Dispose();
    }

    private readonly Thread[] _threads;
    private readonly SemaphoreSlim[] _wake;
    private readonly int[] _sleeping;
    private readonly object _gate = new();
    private Action<int>? _work;
    // A fork's number and how many workers it needs, in one word ((fork << 16) | helpers) so a worker reads both at once:
    // read apart, a worker that saw one fork's number and the next fork's helper count could run the next fork's part
    // twice and let its join return while another part was still running.
    private long _generation;
    private int _pending;
    private volatile bool _stopping;
    private Exception? _error;

    public int Workers => _threads.Length;

    public ComputePool(int workers)
    {
        _threads = new Thread[workers];
        _wake = new SemaphoreSlim[workers];
        _sleeping = new int[workers];
        for (int i = 0; i < workers; i++)
        {
            int id = i + 1;
            _wake[i] = new SemaphoreSlim(0);
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
            Volatile.Write(ref _pending, helpers);
            Interlocked.Exchange(ref _generation, ((_generation >> 16) + 1) << 16 | (long)helpers);
            for (int i = 0; i < helpers; i++)
                if (Interlocked.Exchange(ref _sleeping[i], 0) == 1) _wake[i].Release();
            body(0);
            for (int i = helpers + 1; i < parts; i++) body(i);
            var spin = new SpinWait();
            while (Volatile.Read(ref _pending) > 0) spin.SpinOnce(sleep1Threshold: -1);
            _work = null;
            if (_error is not null) throw new AggregateException(_error);
        }
    }

    private void Loop(int id)
    {
        // Inference-mode is per thread in libtorch; every op these workers run is inference.
        using var inference = TorchSharp.torch.inference_mode();
        long seen = 0;
        long spinTicks = Stopwatch.Frequency * SpinMicroseconds / 1_000_000;
        while (!_stopping)
        {
            long start = Stopwatch.GetTimestamp();
            // Yield while spinning: free when the core is idle, and it cedes the core to any other runnable thread
            // (e.g. the next stage's process in a local swarm).
            while (Volatile.Read(ref _generation) == seen && !_stopping && Stopwatch.GetTimestamp() - start < spinTicks)
                if (!Thread.Yield()) Thread.SpinWait(20);
            if (Volatile.Read(ref _generation) == seen && !_stopping)
            {
                // A full fence (not a release store): the flag must be visible before the generation is read again,
                // or the caller can bump the generation, read the flag as 0 and skip the wake while this worker read
                // the old generation and blocks — the caller then spins at the join for ever (x86 reorders a store
                // with a later load; seen as a `bench local` run stuck with one core busy).
                Interlocked.Exchange(ref _sleeping[id - 1], 1);
                if (Volatile.Read(ref _generation) == seen && !_stopping) _wake[id - 1].Wait();
                Interlocked.Exchange(ref _sleeping[id - 1], 0);
                continue; // re-check: wake-ups may be spurious
            }
            if (_stopping) return;
            seen = Volatile.Read(ref _generation);
            if (id > (int)(seen & 0xFFFF)) continue; // not needed in this fork
            try { _work!(id); }
            catch (Exception e) { _error = e; }
            finally { Interlocked.Decrement(ref _pending); }
        }
    }

    public void Dispose()
    {
        _stopping = true;
        for (int i = 0; i < _wake.Length; i++) _wake[i].Release();
        foreach (var t in _threads) t.Join();
        foreach (var s in _wake) s.Dispose();
    }
}
