using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;

namespace Swarm.Cli.Bench;

/// <summary>
/// <c>swarm bench verify</c>: what spot checks cost and how fast they catch a liar. For each verify rate R a fresh swarm
/// of three replicas of every layer (codelm-tiny, one process each) runs the same greedy jobs, a few at a time, after a
/// warm-up that lasts until no node is on probation any more (its first checked steps run at ten times the rate), so
/// the figure is the steady state; throughput is tokens/s over the measured jobs, and the fraction of their steps that
/// were checked is read from the nodes' passed checks (two per checked step: the checked node's and its shadow's). Checks
/// run beside the steps (the job waits only at its end for the last ones), so a check whose shadow never answered
/// counts no pass: the checks that timed out are read from <c>/metrics</c> and shown. Probation is not hidden: the
/// warm-up's own throughput (fresh nodes, checked at ten times the rate) is reported beside the steady state's. The
/// expected number of jobs routed through a node until it is caught comes from the
/// check rates: a job of n steps through a node that corrupts a fraction P of its outputs is caught when its session is
/// checked (probability R, after probation) and one of its n steps is corrupted: q = R·(1 − (1 − P)ⁿ), expected 1/q jobs.
/// </summary>
internal static class VerifyBench
{
    /// <param name="Rate">The verify rate R.</param>
    /// <param name="TokensPerSecond">Throughput over the measured jobs.</param>
    /// <param name="ChecksPassed">Passed checks over the measured jobs (two per checked step).</param>
    /// <param name="ChecksFailed">Failed checks over the measured jobs.</param>
    /// <param name="CheckedFraction">Fraction of the measured jobs' steps that were checked (≈ R in the steady state).</param>
    /// <param name="WarmupJobs">Jobs run before measuring, until no node was on probation.</param>
    /// <param name="WarmupTokensPerSecond">Throughput over the warm-up (fresh processes, and nodes on probation: probation's cost).</param>
    /// <param name="ChecksTimedOut">Checks over the measured jobs whose shadow did not answer in time (no pass counted).</param>
    /// <param name="StillOnProbation">Serving nodes still on probation when measuring started (the warm-up hit its cap); empty: none.</param>
    public sealed record RatePoint(double Rate, double TokensPerSecond, long ChecksPassed, long ChecksFailed, double CheckedFraction, int WarmupJobs,
        double WarmupTokensPerSecond, long ChecksTimedOut, string StillOnProbation);

    public sealed record CatchPoint(double Rate, double Fraction, double ExpectedJobs);

    public sealed record Report(string Model, int Jobs, int TokensPerJob, IReadOnlyList<RatePoint> Throughput, IReadOnlyList<CatchPoint> Catch);

    public static readonly double[] Rates = [0, 0.05, 0.2];
    public static readonly double[] Fractions = [0.01, 0.05, 0.2];

    public static async Task<Report> RunAsync(int jobs, int tokens, int threadsPerNode, Action<string> log, CancellationToken ct)
    {
        var points = new List<RatePoint>();
        foreach (double rate in Rates)
        {
            await using var swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
            {
                Model = BuiltInModels.CodeLmTiny, Nodes = 3, Layers = ["0:4", "0:4", "0:4"], ThreadsPerNode = threadsPerNode,
                CoordinatorArgs = ["--verify-rate", rate.ToString(CultureInfo.InvariantCulture)],
            }, log, ct: ct);
            await WaitServingAsync(swarm, 3, ct);
            int warmup = 0, warmupTokens = 0;
            string onProbation = "";
            var warm = Stopwatch.StartNew();
            do
            {
                log($"R = {rate}: warm-up (until no node is on probation{(onProbation.Length > 0 ? "; still: " + onProbation : "")})…");
                warmupTokens += await RunJobsAsync(swarm.HttpUrl, jobs, tokens, ct);
                warmup += jobs;
                onProbation = (await ChecksAsync(swarm, ct)).Probation;
            }
            while (onProbation.Length > 0 && warmup < 8 * jobs);
            double warmTps = warmupTokens / warm.Elapsed.TotalSeconds;
            if (onProbation.Length > 0) log($"R = {rate}: warm-up cap reached; measuring with nodes still on probation: {onProbation}");
            var before = await ChecksAsync(swarm, ct);
            long timeoutsBefore = await TimedOutChecksAsync(swarm, ct);
            log($"R = {rate}: {jobs} jobs of {tokens} tokens…");
            var sw = Stopwatch.StartNew();
            int produced = await RunJobsAsync(swarm.HttpUrl, jobs, tokens, ct);
            double tps = produced / sw.Elapsed.TotalSeconds;
            var after = await ChecksAsync(swarm, ct);
            long passed = after.Passed - before.Passed, failed = after.Failed - before.Failed;
            long timedOut = await TimedOutChecksAsync(swarm, ct) - timeoutsBefore;
            // Each generated token is one step (the prefill is the first); a checked step that passes counts two passes.
            points.Add(new RatePoint(rate, tps, passed, failed, produced == 0 ? 0 : passed / 2.0 / produced, warmup, warmTps, timedOut, onProbation));
        }
        int steps = tokens; // one check per generated token (the prefill is the first step)
        var catches = Rates.Where(r => r > 0).SelectMany(r => Fractions.Select(p =>
            new CatchPoint(r, p, 1 / (r * (1 - Math.Pow(1 - p, steps)))))).ToList();
        return new Report("codelm-tiny", jobs, tokens, points, catches);
    }

    private static async Task<int> RunJobsAsync(string url, int jobs, int tokens, CancellationToken ct)
    {
        const int parallel = 3;
        int next = -1, produced = 0;
        async Task Worker()
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < jobs)
            {
                var prompt = Enumerable.Range(0, 8).Select(k => (JsonNode)((i * 31 + k * 7) % 500 + 1)).ToArray();
                var body = new JsonObject { ["prompt"] = new JsonArray(prompt), ["max_tokens"] = tokens, ["temperature"] = 0 };
                var result = await Commands.GenerateCommand.Client.CompleteAsync(url, body, ct);
                Interlocked.Add(ref produced, result.TokenIds.Count);
            }
        }
        await Task.WhenAll(Enumerable.Range(0, parallel).Select(_ => Worker()));
        return produced;
    }

    /// <summary>The nodes' passed and failed checks summed, and the serving nodes still on probation (with their checks; empty: none).</summary>
    private static async Task<(long Passed, long Failed, string Probation)> ChecksAsync(LocalSwarm swarm, CancellationToken ct)
    {
        var status = await swarm.GetJsonAsync("/api/swarm", ct);
        long passed = 0, failed = 0;
        var probation = new List<string>();
        foreach (var n in status!["nodes"]!.AsArray())
        {
            var checks = n!["checks"]!;
            passed += (long)checks["passed"]!;
            failed += (long)checks["failed"]!;
            // Only serving nodes take jobs: an entry left behind by a node that registered again can never leave probation.
            if ((string?)n["state"] == "serving" && ((bool?)checks["probation"] ?? false))
                probation.Add($"{n["name"]} {checks.ToJsonString()}");
        }
        return (passed, failed, string.Join(", ", probation));
    }

    /// <summary>Checks the coordinator counted as timed out (<c>swarm_verification_checks_total{outcome="timeout"}</c>), 0 when none yet.</summary>
    private static async Task<long> TimedOutChecksAsync(LocalSwarm swarm, CancellationToken ct)
    {
        using var http = new HttpClient();
        string metrics = await http.GetStringAsync(swarm.HttpUrl + "/metrics", ct);
        return metrics.Split('\n')
            .Where(l => l.StartsWith("swarm_verification_checks_total{", StringComparison.Ordinal) && l.Contains("outcome=\"timeout\"", StringComparison.Ordinal))
            .Sum(l => (long)double.Parse(l[(l.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture));
    }

    private static async Task WaitServingAsync(LocalSwarm swarm, int nodes, CancellationToken ct)
    {
        var wait = Stopwatch.StartNew();
        while (wait.Elapsed < TimeSpan.FromSeconds(60))
        {
            var s = await swarm.GetJsonAsync("/api/swarm", ct);
            if (s!["nodes"]!.AsArray().Count(n => (string?)n!["state"] == "serving") == nodes) return;
            await Task.Delay(100, ct);
        }
    }
}
