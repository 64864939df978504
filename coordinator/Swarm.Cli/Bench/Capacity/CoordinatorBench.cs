using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Swarm.Model;

namespace Swarm.Cli.Bench.Capacity;

/// <summary>
/// <c>swarm bench coordinator</c>: a real coordinator process (swarm-coordinator, torch-free, as deployed) driven by N
/// simulated nodes (<see cref="FakeSwarm"/>: the real protocol over real, encrypted UDP) and M concurrent clients of its
/// HTTP API. Per N: the idle swarm's coordinator CPU (heartbeats, failure detection, rebalancing checks), the response
/// time of <c>/api/swarm</c> and <c>/metrics</c>, the real placement policy's times on that many nodes
/// (<see cref="PlacementTiming"/>); per (N, M): routed tokens/s at saturation (stages answer at once, or after
/// <see cref="Settings.HopLatency"/>), coordinator CPU per 1,000 tokens, resident memory. The coordinator's CPU is read
/// from <c>/proc</c>, so the load generator's own CPU (which shares the machine) is not counted in it.
/// </summary>
internal static class CoordinatorBench
{
    /// <summary>What to measure.</summary>
    /// <param name="Nodes">Swarm sizes N.</param>
    /// <param name="Jobs">Concurrent jobs M.</param>
    /// <param name="Seconds">Length of each measured load and of the idle measurement.</param>
    /// <param name="Preset">Model the nodes register for (its config only; no weights exist).</param>
    /// <param name="LayersPerNode">Layers each node's memory budget fits: routes have about L ÷ this many hops.</param>
    /// <param name="TokensPerJob">New tokens each job asks for.</param>
    /// <param name="HopLatency">Fake compute per hop of a step.</param>
    public sealed record Settings(IReadOnlyList<int> Nodes, IReadOnlyList<int> Jobs, double Seconds, string Preset, int LayersPerNode,
        int TokensPerJob, TimeSpan HopLatency);

    /// <summary>Figures of one M on one swarm.</summary>
    /// <param name="CoordinatorCpuPercent">The coordinator's CPU over the run, in % of a core.</param>
    /// <param name="GeneratorCpuPercent">The load generator's (this process's) CPU over the run, in % of a core: near 200 % on
    /// two cores, the generator, not the coordinator, is what limits tokens/s.</param>
    public sealed record LoadFigures(int Jobs, double TokensPerSecond, double CpuMsPer1kTokens, long Tokens, int FailedJobs, double ResidentMb,
        double CoordinatorCpuPercent, double GeneratorCpuPercent);

    /// <summary>Figures of one swarm size.</summary>
    /// <param name="ServingAfterIdle">Nodes still serving after the idle measurement: fewer than N means heartbeats were missed
    /// (a starved load generator), and the idle CPU figure then covers fewer nodes than asked for.</param>
    public sealed record SwarmFigures(int Nodes, double HeartbeatCpuPercent, double JoinSeconds, double ApiSwarmMs, double MetricsMs,
        double IdleResidentMb, PlacementTiming.Figures Placement, IReadOnlyList<LoadFigures> Loads, int ServingAfterIdle);

    /// <summary>Runs every N (a fresh coordinator each) and every M on it.</summary>
    public static async Task<IReadOnlyList<SwarmFigures>> RunAsync(Settings s, Action<string> log, CancellationToken ct)
    {
        var cfg = Presets.Get(s.Preset);
        string modelDir = Path.Combine(Path.GetTempPath(), $"swarm-bench-coordinator-{Environment.ProcessId}");
        Directory.CreateDirectory(modelDir);
        await File.WriteAllTextAsync(Path.Combine(modelDir, "config.json"), cfg.ToJson(), ct);
        var profile = Profile(cfg, s);
        var results = new List<SwarmFigures>();
        try
        {
            foreach (int n in s.Nodes) results.Add(await RunSwarmAsync(n, cfg, modelDir, profile, s, log, ct));
        }
        finally { Directory.Delete(modelDir, recursive: true); }
        return results;
    }

    private static FakeNodeProfile Profile(ModelConfig cfg, Settings s)
    {
        long weights = LayerMemory.WeightBytesPerLayer(cfg, LayerMemory.PlacementBytesPerElement);
        long kv = LayerMemory.KvBytesPerTokenPerLayer(cfg, LayerMemory.PlacementBytesPerElement);
        long perLayer = weights + kv * LayerMemory.KvReserveTokens;
        return new FakeNodeProfile($"gpt_neox:{cfg.NumLayers}x{cfg.HiddenSize}x{cfg.VocabSize}", weights, kv,
            perLayer * s.LayersPerNode + perLayer / 2, 1000, s.HopLatency, cfg.VocabSize);
    }

    private static async Task<SwarmFigures> RunSwarmAsync(int n, ModelConfig cfg, string modelDir, FakeNodeProfile profile, Settings s,
        Action<string> log, CancellationToken ct)
    {
        int maxJobs = s.Jobs.Max();
        await using var coordinator = await LocalSwarm.StartAsync(new LocalSwarmOptions
        {
            Model = modelDir, Nodes = 0, WaitUntilCovered = false,
            CoordinatorArgs = ["--max-concurrent-jobs", $"{maxJobs}", "--max-queue-length", $"{maxJobs}", "--verify-rate", "0"],
            // Heartbeats keep their interval (their cost is what is measured), but a node is declared dead only after 30 s
            // of silence, not 2.5 s: on a shared 2-core machine the load generator's threads are at times not scheduled for
            // seconds, and a mass "death" then would measure recovery instead of capacity. serving_after_idle still shows it.
            Environment = new Dictionary<string, string>
            {
                ["SWARM_COORDINATOR__SUSPECTAFTER"] = "00:00:15", ["SWARM_COORDINATOR__DEADAFTER"] = "00:00:30",
            },
        }, log, ct: ct);
        int pid = coordinator.CoordinatorProcessId;
        log($"N={n}: registering {n} simulated nodes…");
        var joinClock = Stopwatch.StartNew();
        await using var nodes = await FakeSwarm.StartAsync(n, profile, new IPEndPoint(IPAddress.Loopback, coordinator.ControlPort), ct);
        await coordinator.WaitCoveredAsync(TimeSpan.FromMinutes(5), ct);
        double joinSeconds = joinClock.Elapsed.TotalSeconds;

        log($"N={n}: idle swarm for {s.Seconds:F0} s (heartbeats only)…");
        // A fresh coordinator's tiered JIT recompiles hot methods for a few seconds after start: that is not heartbeat cost
        // (it was most of the idle figure at 10 nodes), so the measurement starts after it has settled.
        await Task.Delay(TimeSpan.FromSeconds(5), ct);
        double cpu0 = ProcessUsage.CpuMs(pid), ownCpu0 = ProcessUsage.CpuMs(Environment.ProcessId);
        var pause0 = GC.GetTotalPauseDuration();
        var idle = Stopwatch.StartNew();
        await Task.Delay(TimeSpan.FromSeconds(s.Seconds), ct);
        double heartbeatPercent = (ProcessUsage.CpuMs(pid) - cpu0) / idle.Elapsed.TotalMilliseconds * 100;
        double generatorPercent = (ProcessUsage.CpuMs(Environment.ProcessId) - ownCpu0) / idle.Elapsed.TotalMilliseconds * 100;
        double generatorPauseMs = (GC.GetTotalPauseDuration() - pause0).TotalMilliseconds;
        double idleMb = ProcessUsage.ResidentMb(pid);

        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = int.MaxValue }) { Timeout = TimeSpan.FromMinutes(5) };
        int serving = await ServingNodesAsync(http, coordinator.HttpUrl, ct);
        double apiMs = await MedianGetMsAsync(http, coordinator.HttpUrl + "/api/swarm", ct);
        double metricsMs = await MedianGetMsAsync(http, coordinator.HttpUrl + "/metrics", ct);
        var placement = PlacementTiming.Measure(cfg, n, profile);
        log($"N={n}: joined in {joinClock.Elapsed.TotalSeconds:F1} s; {serving} of {n} serving after the idle run; idle CPU {heartbeatPercent:F2} % of a core; /api/swarm {apiMs:F2} ms, /metrics {metricsMs:F2} ms; "
            + $"placement join {placement.JoinMs:F3} ms, recover {placement.RecoverMs:F3} ms, rebalance {placement.RebalanceMs:F3} ms; {idleMb:F0} MB; "
            + $"load generator meanwhile {generatorPercent:F1} % of a core, GC pauses {generatorPauseMs:F0} ms, {ProcessUsage.ResidentMb(Environment.ProcessId):F0} MB");

        var loads = new List<LoadFigures>();
        foreach (int m in s.Jobs)
        {
            log($"N={n}, M={m}: {s.Seconds:F0} s of load…");
            var load = await LoadAsync(http, coordinator.HttpUrl, pid, m, cfg, s, ct);
            loads.Add(load);
            log($"N={n}, M={m}: {load.TokensPerSecond:F0} tokens/s, {load.CpuMsPer1kTokens:F1} coordinator CPU ms per 1,000 tokens, {load.FailedJobs} failed jobs, {load.ResidentMb:F0} MB; "
                + $"coordinator {load.CoordinatorCpuPercent:F0} % of a core, load generator {load.GeneratorCpuPercent:F0} %");
        }
        return new SwarmFigures(n, heartbeatPercent, joinSeconds, apiMs, metricsMs, idleMb, placement, loads, serving);
    }

    /// <summary>How many nodes <c>/api/swarm</c> shows serving (alive, heartbeating, with a range).</summary>
    private static async Task<int> ServingNodesAsync(HttpClient http, string url, CancellationToken ct)
    {
        var status = JsonNode.Parse(await http.GetStringAsync(url + "/api/swarm", ct));
        return status!["nodes"]!.AsArray().Count(node => (string?)node!["state"] == "serving");
    }

    private static async Task<double> MedianGetMsAsync(HttpClient http, string url, CancellationToken ct)
    {
        var times = new List<double>();
        for (int i = 0; i < 21; i++)
        {
            var sw = Stopwatch.StartNew();
            (await http.GetAsync(url, ct)).EnsureSuccessStatusCode();
            times.Add(sw.Elapsed.TotalMilliseconds);
        }
        times.Sort();
        return times[times.Count / 2];
    }

    /// <summary>M clients, each submitting jobs back to back until the time is up; tokens and CPU over the whole run.</summary>
    private static async Task<LoadFigures> LoadAsync(HttpClient http, string url, int pid, int m, ModelConfig cfg, Settings s, CancellationToken ct)
    {
        long tokens = 0;
        int failed = 0;
        var deadline = TimeSpan.FromSeconds(s.Seconds);
        double cpu0 = ProcessUsage.CpuMs(pid), ownCpu0 = ProcessUsage.CpuMs(Environment.ProcessId);
        var clock = Stopwatch.StartNew();
        var clients = Enumerable.Range(0, m).Select(client => Task.Run(async () =>
        {
            int job = 0;
            while (clock.Elapsed < deadline)
            {
                var prompt = Enumerable.Range(0, 8).Select(i => (JsonNode)((client * 131 + job * 17 + i * 7) % cfg.VocabSize)).ToArray();
                var body = new JsonObject { ["prompt"] = new JsonArray(prompt), ["max_tokens"] = s.TokensPerJob, ["temperature"] = 0 };
                job++;
                try
                {
                    using var response = await http.PostAsync(url + "/v1/completions", new StringContent(body.ToJsonString(), System.Text.Encoding.UTF8, "application/json"), ct);
                    if (!response.IsSuccessStatusCode) { Interlocked.Increment(ref failed); continue; }
                    var reply = JsonNode.Parse(await response.Content.ReadAsStringAsync(ct));
                    Interlocked.Add(ref tokens, (long)reply!["usage"]!["completion_tokens"]!);
                }
                catch (HttpRequestException) { Interlocked.Increment(ref failed); }
            }
        }, ct)).ToArray();
        await Task.WhenAll(clients);
        double seconds = clock.Elapsed.TotalSeconds, cpu = ProcessUsage.CpuMs(pid) - cpu0;
        double generatorPercent = (ProcessUsage.CpuMs(Environment.ProcessId) - ownCpu0) / clock.Elapsed.TotalMilliseconds * 100;
        return new LoadFigures(m, tokens / seconds, tokens > 0 ? cpu / (tokens / 1000.0) : double.NaN, tokens, failed, ProcessUsage.ResidentMb(pid),
            cpu / clock.Elapsed.TotalMilliseconds * 100, generatorPercent);
    }
}
