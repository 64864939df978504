using System.Diagnostics;
using static TorchSharp.torch;

namespace Swarm.Cli.Bench;

/// <summary>Machine ceilings measured in the same run as the figures they bound.</summary>
internal static class Roofline
{
    /// <summary>Read bandwidth in GB/s: best of several full passes (sum) over a buffer far larger than cache.</summary>
    public static double MeasureReadBandwidthGBps(long bytes = 1L << 30, int passes = 6)
    {
        using var scope = NewDisposeScope();
        using var _ = inference_mode();
        var buf = ones(bytes / 4, ScalarType.Float32);
        buf.sum().item<float>(); // touch
        double best = 0;
        for (int i = 0; i < passes; i++)
        {
            var sw = Stopwatch.StartNew();
            buf.sum().item<float>();
            best = Math.Max(best, bytes / sw.Elapsed.TotalSeconds / 1e9);
        }
        return best;
    }

    /// <summary>Matmul FLOP/s (GFLOP/s) of [m,k]×[k,n] in the given dtype, best of several runs.</summary>
    public static double MeasureMatmulGflops(long m, long k, long n, ScalarType dtype, int reps = 5)
    {
        using var scope = NewDisposeScope();
        using var _ = inference_mode();
        var a = randn(m, k).to_type(dtype);
        var w = randn(n, k).to_type(dtype);
        nn.functional.linear(a, w);
        double best = 0;
        for (int i = 0; i < reps; i++)
        {
            var sw = Stopwatch.StartNew();
            using var r = nn.functional.linear(a, w);
            best = Math.Max(best, 2.0 * m * k * n / sw.Elapsed.TotalSeconds / 1e9);
        }
        return best;
    }
}
