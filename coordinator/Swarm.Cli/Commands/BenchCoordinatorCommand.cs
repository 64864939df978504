using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Swarm.Cli.Bench.Capacity;

namespace Swarm.Cli.Commands;

/// <summary><c>swarm bench coordinator</c>: the coordinator's capacity (see <see cref="CoordinatorBench"/>).</summary>
internal static class BenchCoordinatorCommand
{
    public static Command Create()
    {
        var nodes = new Option<string>("--nodes") { Description = "Swarm sizes N, comma-separated", DefaultValueFactory = _ => "10,100,1000" };
        var jobs = new Option<string>("--jobs") { Description = "Concurrent jobs M, comma-separated", DefaultValueFactory = _ => "16,256,1024" };
        var seconds = new Option<double>("--seconds") { Description = "Seconds of each load and of the idle measurement", DefaultValueFactory = _ => 10 };
        var preset = new Option<string>("--preset") { Description = "Model the simulated nodes register for (config only)", DefaultValueFactory = _ => "pythia-12b" };
        var layers = new Option<int>("--layers-per-node") { Description = "Layers each simulated node holds", DefaultValueFactory = _ => 4 };
        var tokens = new Option<int>("--tokens-per-job") { Description = "New tokens per job", DefaultValueFactory = _ => 64 };
        var hopMs = new Option<double>("--hop-ms") { Description = "Fake compute per hop in ms (0 = stages answer at once)", DefaultValueFactory = _ => 0 };
        var json = new Option<bool>("--json") { Description = "Print JSON" };
        var cmd = new Command("coordinator", "One coordinator process against N simulated nodes (real protocol, real UDP) and M concurrent jobs over HTTP");
        foreach (var o in new Option[] { nodes, jobs, seconds, preset, layers, tokens, hopMs, json }) cmd.Options.Add(o);
        cmd.SetAction(async (r, ct) =>
        {
            var settings = new CoordinatorBench.Settings(Ints(r.GetValue(nodes)!), Ints(r.GetValue(jobs)!), r.GetValue(seconds), r.GetValue(preset)!,
                r.GetValue(layers), r.GetValue(tokens), TimeSpan.FromMilliseconds(r.GetValue(hopMs)));
            double load0 = ProcessUsage.LoadAverage();
            var results = await CoordinatorBench.RunAsync(settings, m => Console.Error.WriteLine(m), ct);
            double load1 = ProcessUsage.LoadAverage();
            if (r.GetValue(json)) Console.WriteLine(Json(settings, results, load0, load1));
            else Print(settings, results, load0, load1);
            return 0;
        });
        return cmd;
    }

    private static int[] Ints(string list) =>
        [.. list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(s => int.Parse(s, CultureInfo.InvariantCulture))];

    private static double R(double v, int digits = 2) => double.IsFinite(v) ? Math.Round(v, digits) : -1;

    internal static string Json(CoordinatorBench.Settings s, IReadOnlyList<CoordinatorBench.SwarmFigures> results, double load0, double load1) =>
        JsonSerializer.Serialize(new
        {
            nodes = results.Select(x => x.Nodes),
            jobs = s.Jobs,
            tokens_per_s = results.Select(x => x.Loads.Select(l => R(l.TokensPerSecond, 1))),
            coordinator_cpu_per_1k_tokens_ms = results.Select(x => x.Loads.Select(l => R(l.CpuMsPer1kTokens))),
            heartbeat_cpu_percent = results.Select(x => R(x.HeartbeatCpuPercent)),
            serving_after_idle = results.Select(x => x.ServingAfterIdle),
            failed_jobs = results.Select(x => x.Loads.Select(l => l.FailedJobs)),
            placement_join_ms = results.Select(x => R(x.Placement.JoinMs, 3)),
            placement_recover_ms = results.Select(x => R(x.Placement.RecoverMs, 3)),
            placement_rebalance_ms = results.Select(x => R(x.Placement.RebalanceMs, 3)),
            api_swarm_ms = results.Select(x => R(x.ApiSwarmMs)),
            metrics_ms = results.Select(x => R(x.MetricsMs)),
            join_seconds = results.Select(x => R(x.JoinSeconds)),
            memory_idle_mb = results.Select(x => R(x.IdleResidentMb, 1)),
            memory_mb = results.Select(x => x.Loads.Select(l => R(l.ResidentMb, 1))),
            seconds = s.Seconds, preset = s.Preset, layers_per_node = s.LayersPerNode, tokens_per_job = s.TokensPerJob,
            hop_ms = s.HopLatency.TotalMilliseconds, load_average = new[] { load0, load1 }, processors = Environment.ProcessorCount,
        });

    private static void Print(CoordinatorBench.Settings s, IReadOnlyList<CoordinatorBench.SwarmFigures> results, double load0, double load1)
    {
        Console.WriteLine($"{s.Preset}, {s.LayersPerNode} layers per simulated node, {s.TokensPerJob} tokens per job, stages answer after {s.HopLatency.TotalMilliseconds} ms per hop; "
            + $"{s.Seconds} s per figure; load average {load0:F2} → {load1:F2} on {Environment.ProcessorCount} cores");
        foreach (var x in results)
        {
            Console.WriteLine($"N = {x.Nodes}: joined in {x.JoinSeconds:F1} s; {x.ServingAfterIdle} serving after the idle run; idle coordinator CPU (heartbeats) {x.HeartbeatCpuPercent:F2} % of a core; "
                + $"memory {x.IdleResidentMb:F0} MB; GET /api/swarm {x.ApiSwarmMs:F2} ms, /metrics {x.MetricsMs:F2} ms");
            Console.WriteLine($"  placement (real policy, {x.Nodes} nodes): join {x.Placement.JoinMs:F3} ms, recover {x.Placement.RecoverMs:F3} ms, rebalance check {x.Placement.RebalanceMs:F3} ms");
            foreach (var l in x.Loads)
                Console.WriteLine($"  M = {l.Jobs,5}: {l.TokensPerSecond,9:F0} tokens/s, coordinator CPU {l.CpuMsPer1kTokens,7:F1} ms per 1,000 tokens, {l.Tokens} tokens, "
                    + $"{l.FailedJobs} failed jobs, memory {l.ResidentMb:F0} MB");
        }
    }
}
