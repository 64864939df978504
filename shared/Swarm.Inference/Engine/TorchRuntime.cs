using TorchSharp;

namespace Swarm.Engine;

/// <summary>Thrown when libtorch / LibTorchSharp cannot be loaded; the message says why and what to do.</summary>
public sealed class TorchLoadException(string message, Exception inner) : Exception(message, inner);

/// <summary>Loads TorchSharp's native library once and turns a loader failure into one clear message.</summary>
public static class TorchRuntime
{
    private static readonly object Gate = new();
    private static bool _ready;

    /// <summary>Initialises libtorch and sets the intra-op thread count (0 = all cores).</summary>
    /// <exception cref="TorchLoadException">The native library could not be loaded.</exception>
    public static void Initialize(int threads = 0)
    {
        lock (Gate)
        {
            if (!_ready)
            {
                PrepareEnvironment();
                try
                {
                    using var probe = torch.zeros(1);
                }
                catch (Exception e) when (e is TypeInitializationException or DllNotFoundException or NotSupportedException)
                {
                    throw new TorchLoadException(Explain(e), e);
                }
                LimitInterOpThreads();
                _ready = true;
            }
            int n = threads > 0 ? threads : Environment.ProcessorCount;
            torch.set_num_threads(n);
            Model.ComputePool.Configure(n);
        }
    }

    /// <summary>
    /// Inference runs its ops one after another (no TorchScript forks), so libtorch's inter-op pool would only add idle
    /// threads — one per core by default — to every process. libtorch accepts this once, before any parallel work.
    /// </summary>
    private static void LimitInterOpThreads()
    {
        try { torch.set_num_interop_threads(1); }
        catch (System.Runtime.InteropServices.ExternalException) { } // parallel work already started (another initialiser): keep its pool
    }

    /// <summary>
    /// Sets OMP_WAIT_POLICY=PASSIVE (unless the user chose a policy). libgomp reads it once, when libtorch is first
    /// loaded, so call this before anything touches TorchSharp: idle OpenMP workers that spin steal the cores our GEMV
    /// workers and the other processes of a local swarm need (measured: a node's decode step 30 ms → 70 ms without it).
    /// </summary>
    public static void PrepareEnvironment()
    {
        if (!OperatingSystem.IsWindows() && Environment.GetEnvironmentVariable("OMP_WAIT_POLICY") is null)
        {
            setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
            Environment.SetEnvironmentVariable("OMP_WAIT_POLICY", "PASSIVE"); // child processes inherit it too
        }
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int setenv(string name, string value, int overwrite);

    internal static string Explain(Exception e)
    {
        string all = string.Join("\n", Flatten(e).Select(x => x.Message));
        const string lib = "libLibTorchSharp.so";
        if (all.Contains("GLIBCXX_3.4.32"))
            return $"cannot load {lib}: it requires GLIBCXX_3.4.32, which this system's libstdc++ lacks (GCC 12 / Debian 12 provide 3.4.30). " +
                   "Swarm's build marks that requirement weak in the copy it ships; rebuild with ./swarm (or `dotnet build`) so the patched copy " +
                   "is in bin/, or run on a system with GCC 13+'s libstdc++ (Debian 13, Ubuntu 24.04).";
        if (all.Contains("libtorch-cpu") || all.Contains("LibTorchSharp"))
            return $"cannot load {lib} or libtorch: the native libtorch files are missing next to TorchSharp.dll. " +
                   "Restore and rebuild (./swarm builds on first use; `dotnet build` otherwise) so the libtorch-cpu-linux-x64 package's files are copied to bin/.";
        return $"cannot initialise TorchSharp: {Flatten(e).Last().Message.Split('\n')[0]}";
    }

    private static IEnumerable<Exception> Flatten(Exception e)
    {
        for (Exception? x = e; x is not null; x = x.InnerException) yield return x;
    }
}
