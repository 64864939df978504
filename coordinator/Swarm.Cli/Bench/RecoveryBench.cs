using System.Diagnostics;
using System.Text.Json.Nodes;
using Swarm.Checkpoints;
using Swarm.Model;

namespace Swarm.Cli.Bench;

/// <summary>
/// <c>swarm bench recovery</c>: a long greedy job streams through two stages; a replica of the second stage
/// joins; the node serving the job's second stage is SIGKILLed. Reports the time from the kill to the job's
/// next token, and tokens/s before, across and after the recovery window (the dip).
/// </summary>
internal static class RecoveryBench
{
    public sealed record Report(string Preset, string DeadAfter, double KillToNextTokenMs, double TokensPerSecondBefore,
        double TokensPerSecondDuringWindow, double TokensPerSecondAfter, int Recoveries, bool OutputIdentical);

    public static async Task<Report> RunAsync(string preset, string deadAfter, int threadsPerNode, Action<string> log, CancellationToken ct)
    {
        var cfg = Presets.Get(preset);
        string dir = PresetCache.Ensure(preset, progress: new ConsoleProgress($"creating {preset}"));
        int half = cfg.NumLayers / 2;
        await using var swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
        {
            Model = dir, Nodes = 2, Layers = [$"0:{half}", $"{half}:{cfg.NumLayers}"], WireDtype = "f32", ThreadsPerNode = threadsPerNode,
            CoordinatorArgs = ["--dead-after", deadAfter, "--suspect-after", $"{DaemonConfig.ParseDuration(deadAfter, "--dead-after").TotalSeconds / 2}s"],
        }, log, ct: ct);
        var prompt = Enumerable.Range(0, 16).Select(i => (i * 7919 + 13) % cfg.VocabSize).ToArray();
        const int tokens = 160;
        log("failure-free reference run…");
        var reference = await StreamAsync(swarm.HttpUrl, prompt, tokens, null, ct);

        log("job with a kill…");
        var spareReady = new TaskCompletionSource();
        double killAt = -1;
        var sw = Stopwatch.StartNew();
        var run = StreamAsync(swarm.HttpUrl, prompt, tokens, count =>
        {
            if (count == 10) spareReady.TrySetResult();
        }, ct, sw);
        await spareReady.Task.WaitAsync(TimeSpan.FromMinutes(2), ct);
        swarm.AddNode(layers: $"{half}:{cfg.NumLayers}");
        // Let the spare register and load while the job goes on, then kill the original second stage.
        var wait = Stopwatch.StartNew();
        while (wait.Elapsed < TimeSpan.FromSeconds(30))
        {
            var s = await swarm.GetJsonAsync("/api/swarm", ct);
            if (s!["nodes"]!.AsArray().Count(n => (string?)n!["state"] == "serving") == 3) break;
            await Task.Delay(100, ct);
        }
        killAt = sw.Elapsed.TotalMilliseconds;
        swarm.KillNode(1);
        var (ids, arrivals) = await run;
        var status = await swarm.GetJsonAsync("/api/swarm", ct);
        // Tokens already on their way when the node died still arrive; the job has recovered when the longest
        // gap after the kill ends.
        int j = arrivals.FindIndex(a => a > killAt);
        int resumedAt = j;
        for (int k = Math.Max(1, j); k < arrivals.Count; k++)
            if (arrivals[k] - arrivals[k - 1] > arrivals[resumedAt] - arrivals[Math.Max(0, resumedAt - 1)]) resumedAt = k;
        double next = arrivals[resumedAt];
        double Rate(double from, double to)
        {
            int n = arrivals.Count(a => a >= from && a < to);
            return n / ((to - from) / 1000);
        }
        double window = Math.Max(1000, next - killAt + 500);
        var lastAfter = arrivals[^1];
        return new Report(preset, deadAfter, next - killAt,
            Rate(Math.Max(0, killAt - 2000), killAt), Rate(killAt, killAt + window), Rate(killAt + window, Math.Max(lastAfter, killAt + window + 1)),
            (int)(long)status!["recoveries"]!, ids.SequenceEqual(reference.Ids));
    }

    private static async Task<(List<int> Ids, List<double> Arrivals)> StreamAsync(string url, int[] prompt, int max, Action<int>? onCount, CancellationToken ct, Stopwatch? clock = null)
    {
        clock ??= Stopwatch.StartNew();
        var arrivals = new List<double>();
        var body = new JsonObject { ["prompt"] = new JsonArray(prompt.Select(t => (JsonNode)t).ToArray()), ["max_tokens"] = max, ["temperature"] = 0, ["stream"] = true };
        var result = await Commands.GenerateCommand.Client.CompleteAsync(url, body, ct, (tokens, _) =>
        {
            for (int i = 0; i < tokens.Count; i++)
            {
                arrivals.Add(clock.Elapsed.TotalMilliseconds);
                onCount?.Invoke(arrivals.Count);
            }
        });
        return (result.TokenIds, arrivals);
    }
}
