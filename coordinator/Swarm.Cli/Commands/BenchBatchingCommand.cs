using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Swarm.Cli.Bench;
using Swarm.Engine;
using Swarm.Model;

namespace Swarm.Cli.Commands;

/// <summary><c>swarm bench batching</c>: decode throughput and latency at several numbers of concurrent jobs (see <see cref="BatchingBench"/>).</summary>
internal static class BenchBatchingCommand
{
    public static Command Create()
    {
        var preset = new Option<string>("--preset") { Description = "Model preset (default pythia-160m)", DefaultValueFactory = _ => "pythia-160m" };
        var json = new Option<bool>("--json") { Description = "Print JSON" };
        var tokens = new Option<int>("--tokens") { Description = "New tokens per job (default 32)", DefaultValueFactory = _ => 32 };
        var levels = new Option<string>("--levels") { Description = "Numbers of concurrent jobs, comma-separated; the first is the baseline of the × column", DefaultValueFactory = _ => "1,4,16,64" };
        var weights = new Option<string>("--weights") { Description = "Weight format of the one-node run and of the swarm's nodes: f32, f16, bf16 or int8", DefaultValueFactory = _ => "f32" };
        var threads = new Option<int>("--threads") { Description = "CPU threads of the one-node run and of each swarm node (0: all cores for the one-node run, the cores shared equally among the swarm nodes)", DefaultValueFactory = _ => 0 };
        var noSwarm = new Option<bool>("--no-swarm") { Description = "Skip the 3-node swarm part" };
        var noArrivals = new Option<bool>("--no-arrivals") { Description = "Skip the run with long prompts arriving while others decode" };
        var repeat = new Option<int>("--repeat") { Description = "Runs per level, the levels taking turns; the best run stands for its level (default 3)", DefaultValueFactory = _ => 3 };
        var cmd = new Command("batching", "Aggregate decode tokens/s and per-token latency at 1, 4, 16 and 64 concurrent jobs: one node in-process, and a 3-node swarm over HTTP");
        foreach (var o in new Option[] { preset, json, tokens, levels, weights, threads, noSwarm, noArrivals, repeat }) cmd.Options.Add(o);
        cmd.SetAction(async (r, ct) =>
        {
            string name = r.GetValue(preset)!;
            if (!Presets.All.ContainsKey(name))
                throw new UsageException($"--preset: unknown preset '{name}'; known: {string.Join(", ", Presets.All.Keys)}");
            int n = r.GetValue(tokens);
            if (n < 2) throw new UsageException("--tokens must be ≥ 2 (decode throughput needs a second token)");
            if (r.GetValue(threads) < 0) throw new UsageException("--threads must be ≥ 0");
            int repeats = r.GetValue(repeat);
            if (repeats is < 1 or > 100) throw new UsageException("--repeat must be from 1 to 100");
            int[] jobs = Levels(r.GetValue(levels)!);
            var format = CliCommon.ParseWeights(r.GetValue(weights)!, "--weights");
            TorchRuntime.Initialize(r.GetValue(threads));
            var settings = new BatchingBench.Settings(name, jobs, n, format, r.GetValue(threads), !r.GetValue(noSwarm), !r.GetValue(noArrivals), repeats);
            var report = await BatchingBench.RunAsync(settings, msg => Console.Error.WriteLine(msg), ct);
            if (r.GetValue(json)) Console.WriteLine(Json(report));
            else Print(report);
            return 0;
        });
        return cmd;
    }

    internal static int[] Levels(string list)
    {
        var parts = list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var levels = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out levels[i]) || levels[i] < 1 || levels[i] > 1024)
                throw new UsageException($"--levels: '{parts[i]}' is not a number of jobs from 1 to 1024");
        if (levels.Length == 0) throw new UsageException("--levels: give at least one number of jobs");
        return levels;
    }

    private static string Json(BatchingBench.Report report)
    {
        static double[] R(double[] v) => v.Select(x => Math.Round(x, 2)).ToArray();
        var json = new Dictionary<string, object>
        {
            ["weights"] = report.Weights,
            ["repeats"] = report.Repeats,
            ["concurrency"] = report.Concurrency,
            ["aggregate_tokens_per_s"] = R(report.Aggregate),
            ["ceiling_tokens_per_s"] = R([.. report.Concurrency.Select(report.Ceiling.TokensPerSecond)]),
            ["memory_bandwidth_gb_per_s"] = Math.Round(report.Ceiling.BandwidthGBps, 2),
            ["fma_peak_gflops_f32"] = Math.Round(report.Ceiling.FmaPeakGflops, 1),
            ["swarm_aggregate_tokens_per_s"] = R(report.SwarmAggregate),
            ["p50_ms"] = R(report.P50),
            ["p95_ms"] = R(report.P95),
            ["swarm_p50_ms"] = R(report.SwarmP50),
            ["swarm_p95_ms"] = R(report.SwarmP95),
        };
        if (report.Arrivals is { } a)
            json["arrivals"] = new Dictionary<string, object>
            {
                ["concurrency"] = report.ArrivalSlots,
                ["prompt_tokens"] = StaggeredArrivals.PromptTokens,
                ["tokens_per_s"] = Math.Round(a.Aggregate, 2),
                ["p50_ms"] = Math.Round(a.P50, 2),
                ["p95_ms"] = Math.Round(a.P95, 2),
            };
        return JsonSerializer.Serialize(json);
    }

    private static void Print(BatchingBench.Report report)
    {
        var c = report.Ceiling;
        Console.WriteLine($"{report.Preset} {report.Weights}, {report.Tokens} new tokens per job (16-token prompts, greedy), best of {report.Repeats} runs per level");
        Console.WriteLine($"ceiling: {c.BandwidthGBps:F1} GB/s streaming read, {c.FmaPeakGflops:F0} GFLOP/s f32 FMA peak; a step reads {c.WeightBytesPerStep / 1e6:F0} MB of weights, a token's products are {c.FlopsPerToken / 1e9:F2} GFLOP");
        Console.WriteLine($"{"jobs",4} {"one node tok/s",15} {"× " + report.Concurrency[0] + " job",8} {"ceiling",8} {"of it",6} {"p50 ms",8} {"p95 ms",8} {"peak batch",10} {"swarm tok/s",12} {"swarm p50",10} {"swarm p95",10}");
        for (int i = 0; i < report.Concurrency.Length; i++)
        {
            double ceiling = c.TokensPerSecond(report.Concurrency[i]);
            Console.WriteLine($"{report.Concurrency[i],4} {report.Aggregate[i],15:F1} {report.Aggregate[i] / report.Aggregate[0],8:F2} {ceiling,8:F0} {report.Aggregate[i] / ceiling,6:P0} " +
                              $"{report.P50[i],8:F1} {report.P95[i],8:F1} {report.PeakBatch[i],10} {report.SwarmAggregate[i],12:F1} {report.SwarmP50[i],10:F1} {report.SwarmP95[i],10:F1}");
        }
        Console.WriteLine("(aggregate decode tokens/s over all jobs; ceiling = jobs ÷ the longer of one read of the weights and the jobs' products at the FMA peak;");
        Console.WriteLine(" p50/p95 = time between consecutive tokens of a job)");
        if (report.Arrivals is not { } a) return;
        Console.WriteLine($"{report.ArrivalSlots} jobs, {StaggeredArrivals.PromptTokens}-token prompts arriving while the others decode ({a.Jobs} jobs): " +
                          $"{a.Aggregate:F1} tokens/s, gap p50 {a.P50:F1} ms, p95 {a.P95:F1} ms (p95/p50 {(a.P50 > 0 ? a.P95 / a.P50 : 0):F2})");
    }
}
