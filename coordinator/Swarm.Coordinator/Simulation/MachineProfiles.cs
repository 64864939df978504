namespace Swarm.Coordinator.Simulation;

/// <summary>One volunteer machine as the simulator draws it.</summary>
/// <param name="Kind">What it is, for the report ("gpu-24gb", "cpu-32gb", …).</param>
/// <param name="MemoryBytes">Memory it offers for weights and KV caches.</param>
/// <param name="LayerTokensPerSecond">Decode tokens per second through one pythia-12b-sized layer.</param>
/// <param name="DownloadBytesPerSecond">How fast it fetches weights when given a range.</param>
public sealed record MachineProfile(string Kind, long MemoryBytes, double LayerTokensPerSecond, double DownloadBytesPerSecond);

/// <summary>
/// A distribution of consumer machines: gaming GPUs (8–24 GB), Apple-silicon laptops and CPU desktops, with the share of
/// each seen in volunteer swarms of this kind (Petals' public swarm was mostly 8–24 GB GPUs). Throughput is scaled to
/// the model's layer size (a bigger layer is slower), so the same distribution serves every preset.
/// </summary>
public static class MachineProfiles
{
    private static readonly (string Kind, double Share, double MemoryGb, double LayerTokensPerSecond12b, double DownloadMbit)[] Mix =
    [
        ("gpu-8gb", 0.22, 7, 2500, 100),
        ("gpu-12gb", 0.22, 11, 3500, 200),
        ("gpu-16gb", 0.14, 15, 4500, 300),
        ("gpu-24gb", 0.17, 22, 7000, 500),
        ("mac-32gb", 0.10, 24, 900, 300),
        ("cpu-16gb", 0.08, 12, 120, 100),
        ("cpu-32gb", 0.07, 26, 160, 200),
    ];

    /// <summary>Draws a machine; <paramref name="layerScale"/> is the model's layer size relative to pythia-12b's (throughput divides by it).</summary>
    public static MachineProfile Draw(Random random, double layerScale)
    {
        double u = random.NextDouble(), acc = 0;
        var pick = Mix[^1];
        foreach (var m in Mix)
        {
            acc += m.Share;
            if (u < acc) { pick = m; break; }
        }
        // ±25 % around the type's figures: no two machines are alike.
        double jitter = 0.75 + 0.5 * random.NextDouble();
        return new MachineProfile(pick.Kind, (long)(pick.MemoryGb * (1L << 30)), pick.LayerTokensPerSecond12b * jitter / layerScale,
            pick.DownloadMbit * 1e6 / 8 * (0.75 + 0.5 * random.NextDouble()));
    }
}
