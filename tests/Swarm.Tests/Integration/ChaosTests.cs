using System.Diagnostics;
using Swarm.Checkpoints;
using Swarm.Cli;
using Swarm.Node;
using Swarm.Sampling;
using Swarm.Tests.Model;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Integration;

/// <summary>
/// Four nodes, two replicas of each half of the model; 40 jobs stream through while nodes are SIGKILLed and
/// restarted at random moments (never both replicas of a half at once). Every job must return exactly the
/// tokens of a failure-free run.
/// </summary>
[Collection("processes")]
public class ChaosTests(ITestOutputHelper output)
{
    /// <summary>The longest a step waits for its reply before the coordinator repairs the route anyway.</summary>
    private static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(5);

    [Fact]
    public async Task FortyJobs_WithRandomKillsAndRestarts_AllCompleteWithFailureFreeTokens()
    {
        using var fx = new Fixture(Fixture.Small);
        string[] layers = ["0:3", "0:3", "3:6", "3:6"];
        await using var swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
        {
            Model = fx.CheckpointDir, Nodes = 4, Layers = layers, WireDtype = "f32", ThreadsPerNode = 1,
            CoordinatorArgs = ["--dead-after", "1.2s", "--suspect-after", "0.8s", "--max-concurrent-jobs", "8", "--step-timeout", $"{StepTimeout.TotalMilliseconds:0}ms"],
            NodeArgs = ["--simulate-latency-ms", "10"],
        }, output.WriteLine);

        var rng = new Random(1234);
        var jobs = Enumerable.Range(0, 40).Select(i =>
        {
            var p = fx.Ids($"prompt.{i % fx.PromptCount}");
            return (Prompt: p.Take(1 + rng.Next(p.Length)).ToArray(), Tokens: 12 + rng.Next(12));
        }).ToArray();
        var expected = new long[jobs.Length][];
        using (var ckpt = Checkpoint.Open(fx.CheckpointDir))
        using (var gen = LocalPipeline.Load(ckpt))
        {
            for (int i = 0; i < jobs.Length; i++)
                expected[i] = gen.Generate(jobs[i].Prompt.Select(t => (int)t).ToArray(), SamplingOptions.Greedy(jobs[i].Tokens)).TokenIds.Select(t => (long)t).ToArray();
        }

        // Failure-free latency of a job, for the "added latency" figure.
        var baseline = new List<double>();
        for (int i = 0; i < 4; i++)
        {
            var sw = Stopwatch.StartNew();
            Assert.Equal(expected[i], await SwarmClient.CompleteAsync(swarm.HttpUrl, jobs[i].Prompt, jobs[i].Tokens));
            baseline.Add(sw.Elapsed.TotalMilliseconds);
        }
        double typical = baseline.Order().ElementAt(baseline.Count / 2);

        using var stop = new CancellationTokenSource();
        int kills = 0;
        var chaos = Task.Run(async () =>
        {
            var down = new bool[layers.Length];
            while (!stop.IsCancellationRequested)
            {
                await Task.Delay(300 + rng.Next(500));
                if (stop.IsCancellationRequested) break;
                int victim = rng.Next(layers.Length);
                int partner = victim ^ 1; // 0↔1 hold 0:3, 2↔3 hold 3:6
                if (down[victim] || down[partner] || !await ServingAsync(swarm, partner)) continue;
                swarm.KillNode(victim);
                down[victim] = true;
                Interlocked.Increment(ref kills);
                output.WriteLine($"{DateTime.Now:HH:mm:ss.fff} killed node-{victim + 1}");
                await Task.Delay(1000 + rng.Next(1000));
                swarm.StartNode(victim);
                output.WriteLine($"{DateTime.Now:HH:mm:ss.fff} restarted node-{victim + 1}");
                var sw = Stopwatch.StartNew();
                while (!await ServingAsync(swarm, victim) && sw.Elapsed < TimeSpan.FromSeconds(30)) await Task.Delay(100);
                down[victim] = false;
            }
        });

        var durations = new double[jobs.Length];
        var worstGaps = new double[jobs.Length];
        var results = new long[jobs.Length][];
        using var gate = new SemaphoreSlim(4);
        await Task.WhenAll(Enumerable.Range(0, jobs.Length).Select(async i =>
        {
            await gate.WaitAsync();
            try
            {
                var sw = Stopwatch.StartNew();
                var (tokens, _, arrivals) = await SwarmClient.StreamAsync(swarm.HttpUrl, jobs[i].Prompt, jobs[i].Tokens);
                results[i] = tokens;
                durations[i] = sw.Elapsed.TotalMilliseconds;
                // From the request on: a kill can stall the prefill before the first token as well as a decode step.
                worstGaps[i] = arrivals.Zip(arrivals.Prepend(0), (b, a) => b - a).Max();
            }
            finally { gate.Release(); }
        }));
        stop.Cancel();
        await chaos;

        var status = (await swarm.GetJsonAsync("/api/swarm"))!;
        long recoveries = (long)status["recoveries"]!;
        output.WriteLine($"chaos: {kills} kills, {recoveries} job recoveries; failure-free job {typical:F0} ms, worst job {durations.Max():F0} ms "
            + $"(added {durations.Max() - typical:F0} ms), longest wait for a token {worstGaps.Max():F0} ms");
        for (int i = 0; i < jobs.Length; i++) Assert.Equal(expected[i], results[i]);
        Assert.True(kills >= 2, $"only {kills} kills happened: the test did not exercise failures");
        // A step (prefill or decode) stalled by a kill is repaired after StepTimeout at the latest (usually once the
        // node is suspect or dead, ~1 s here) and re-routed through the partner replica, which was serving at the kill
        // and is not killed before the victim serves again. Kills are spaced by the victim's restart, so one wait for a
        // token can be stalled by two kills at most; 1 s per stall covers re-routing, replaying and scheduling.
        // Measured: under 2 s. A job left waiting on a dead route (for the 30-s queue timeout, or for ever) fails this.
        var bound = 2 * (StepTimeout + TimeSpan.FromSeconds(1));
        int worst = Array.IndexOf(worstGaps, worstGaps.Max());
        Assert.True(worstGaps[worst] < bound.TotalMilliseconds,
            $"job {worst}: waited {worstGaps[worst]:F0} ms for a token, more than {bound.TotalMilliseconds:F0} ms (two stalls of step timeout + 1 s)");
    }

    private static async Task<bool> ServingAsync(LocalSwarm swarm, int node)
    {
        try
        {
            var status = await swarm.GetJsonAsync("/api/swarm");
            return status!["nodes"]!.AsArray().Any(n => (string?)n!["name"] == $"node-{node + 1}" && (string?)n["state"] == "serving");
        }
        catch (HttpRequestException) { return false; }
    }
}
