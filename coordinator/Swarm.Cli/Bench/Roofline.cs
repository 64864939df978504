using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Swarm.Model;
using static TorchSharp.torch;

namespace Swarm.Cli.Bench;

/// <summary>Machine ceilings measured in the same run as the figures they bound.</summary>
internal static class Roofline
{
    /// <summary>Bytes of one piece of the streaming read: what a core takes from the shared counter at a time.</summary>
    private const int ChunkBytes = 1 << 20;

    /// <summary>
    /// Read bandwidth in GB/s as the managed decode reads its weights: every core of <see cref="ComputePool.Shared"/> (the
    /// pool the decode forks on) streams 1 MiB pieces of a buffer far larger than cache, taken in turn from one shared
    /// counter, through 256-bit loads summed in registers. Best of several passes. Steadier than
    /// <see cref="MeasureReadBandwidthGBps"/> (libtorch's <c>sum</c>: 33–46 GB/s from run to run on one machine).
    /// </summary>
    public static double MeasureStreamingReadGBps(long bytes = 1L << 30, int passes = 8)
    {
        int chunks = (int)(bytes / ChunkBytes);
        var buffer = GC.AllocateUninitializedArray<byte>(chunks * ChunkBytes);
        buffer.AsSpan().Fill(1); // every page backed before it is timed
        var counter = new long[16]; // the shared counter at [8]: a cache line of its own
        var sinks = new int[(ComputePool.Shared.Workers + 1) * 16];
        void Part(int part)
        {
            var sum = Vector256<int>.Zero;
            for (long c = Interlocked.Increment(ref counter[8]) - 1; c < chunks; c = Interlocked.Increment(ref counter[8]) - 1)
                sum += SumChunk(buffer.AsSpan((int)c * ChunkBytes, ChunkBytes));
            sinks[part * 16] += Vector256.Sum(sum); // kept, so the loads are not optimised away
        }
        double best = 0;
        for (int pass = 0; pass <= passes; pass++) // pass 0 warms up (JIT, the pool's threads)
        {
            Volatile.Write(ref counter[8], 0);
            var sw = Stopwatch.StartNew();
            ComputePool.Shared.Run(ComputePool.Shared.Workers + 1, Part);
            if (pass > 0) best = Math.Max(best, (double)chunks * ChunkBytes / sw.Elapsed.TotalSeconds / 1e9);
        }
        buffer = null!;
        GC.Collect(); // hand the gigabyte back before the models load
        return best;
    }

    private static Vector256<int> SumChunk(ReadOnlySpan<byte> chunk)
    {
        var a0 = Vector256<int>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
        var v = MemoryMarshal.Cast<byte, Vector256<int>>(chunk);
        for (int i = 0; i + 4 <= v.Length; i += 4)
        {
            a0 += v[i];
            a1 += v[i + 1];
            a2 += v[i + 2];
            a3 += v[i + 3];
        }
        return a0 + a1 + a2 + a3;
    }

    /// <summary>
    /// The cores' f32 FMA peak in GFLOP/s: every core of <see cref="ComputePool.Shared"/> runs twelve independent chains of
    /// fused multiply-adds in registers (512-bit where the CPU runs them at full rate, else 256-bit) with no memory traffic.
    /// Best of several passes. The ceiling of a compute-bound step, such as the products of a large decode batch.
    /// </summary>
    public static double MeasureFmaPeakGflops(int passes = 5)
    {
        const long iterations = 4_000_000;
        bool wide = Vector512.IsHardwareAccelerated;
        int lanes = wide ? 16 : 8, parts = ComputePool.Shared.Workers + 1;
        var sinks = new float[parts * 16];
        void Part(int part) => sinks[part * 16] += wide ? Chains<Vector512<float>, Fma512>(iterations, part) : Chains<Vector256<float>, Fma256>(iterations, part);
        double best = 0;
        for (int pass = 0; pass <= passes; pass++) // pass 0 warms up
        {
            var sw = Stopwatch.StartNew();
            ComputePool.Shared.Run(parts, Part);
            if (pass > 0) best = Math.Max(best, parts * iterations * 12.0 * lanes * 2 / sw.Elapsed.TotalSeconds / 1e9);
        }
        return best;
    }

    /// <summary>Twelve independent chains of <paramref name="n"/> FMAs each on vectors of <typeparamref name="TVector"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Chains<TVector, TOps>(long n, float seed) where TVector : struct where TOps : struct, IFmaOps<TVector>
    {
        var m = TOps.Create(seed); var c = TOps.Create(0.999f);
        var a0 = m; var a1 = m; var a2 = m; var a3 = m; var a4 = m; var a5 = m; var a6 = m; var a7 = m; var a8 = m; var a9 = m; var a10 = m; var a11 = m;
        for (long i = 0; i < n; i++)
        {
            a0 = TOps.Fma(a0, c, m); a1 = TOps.Fma(a1, c, m); a2 = TOps.Fma(a2, c, m); a3 = TOps.Fma(a3, c, m);
            a4 = TOps.Fma(a4, c, m); a5 = TOps.Fma(a5, c, m); a6 = TOps.Fma(a6, c, m); a7 = TOps.Fma(a7, c, m);
            a8 = TOps.Fma(a8, c, m); a9 = TOps.Fma(a9, c, m); a10 = TOps.Fma(a10, c, m); a11 = TOps.Fma(a11, c, m);
        }
        return TOps.Sum(a0) + TOps.Sum(a1) + TOps.Sum(a2) + TOps.Sum(a3) + TOps.Sum(a4) + TOps.Sum(a5)
            + TOps.Sum(a6) + TOps.Sum(a7) + TOps.Sum(a8) + TOps.Sum(a9) + TOps.Sum(a10) + TOps.Sum(a11);
    }

    /// <summary>The three vector operations <see cref="Chains"/> needs, for one vector width (a struct per width).</summary>
    private interface IFmaOps<TVector> where TVector : struct
    {
        static abstract TVector Create(float value);
        static abstract TVector Fma(TVector a, TVector b, TVector c);
        static abstract float Sum(TVector v);
    }

    private readonly struct Fma512 : IFmaOps<Vector512<float>>
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Create(float value) => Vector512.Create(value);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Fma(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Vector512.FusedMultiplyAdd(a, b, c);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector512<float> v) => Vector512.Sum(v);
    }

    private readonly struct Fma256 : IFmaOps<Vector256<float>>
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Create(float value) => Vector256.Create(value);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Fma(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Vector256.FusedMultiplyAdd(a, b, c);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector256<float> v) => Vector256.Sum(v);
    }

    /// <summary>Read bandwidth in GB/s: best of several full passes (libtorch's sum) over a buffer far larger than cache.</summary>
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
