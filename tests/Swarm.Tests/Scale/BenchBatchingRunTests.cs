using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Swarm.Tests.Integration;
using Swarm.Tests.Presets;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Scale;

/// <summary>
/// <c>swarm bench batching --repeat</c> as a real process on the smallest preset: every level runs the given number of
/// times, the levels taking turns, and the best run of each level is the figure printed in the JSON; the machine is
/// measured before every round and the ceiling keeps the highest bandwidth.
/// </summary>
[Collection("processes")]
public sealed partial class BenchBatchingRunTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _tmp = new();

    [Fact]
    public async Task Repeat_RunsLevelsInTurn_AndReportsEachLevelsBestRun()
    {
        var (exit, stdout, stderr) = await CliProcess.RunAsync(SwarmProgram.Cli, TimeSpan.FromMinutes(4),
            new Dictionary<string, string> { ["SWARM_CACHE"] = _tmp.Sub("cache") },
            "bench", "batching", "--preset", "pythia-70m", "--levels", "1,2", "--tokens", "3", "--repeat", "2", "--no-swarm", "--no-arrivals", "--json");
        output.WriteLine(stdout + stderr);
        Assert.Equal(0, exit);

        var runs = RunLine().Matches(stderr).Select(m => (Jobs: int.Parse(m.Groups[1].Value), Run: int.Parse(m.Groups[2].Value),
            TokensPerSecond: double.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture))).ToArray();
        Assert.Equal([(1, 1), (2, 1), (1, 2), (2, 2)], runs.Select(r => (r.Jobs, r.Run)).ToArray());
        var json = JsonNode.Parse(stdout)!;
        Assert.Equal(2, (int)json["repeats"]!);
        // The machine is measured before each round; the ceiling takes the highest reading.
        var bandwidths = MachineLine().Matches(stderr).Select(m => double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)).ToArray();
        Assert.Equal(2, bandwidths.Length);
        Assert.InRange((double)json["memory_bandwidth_gb_per_s"]!, bandwidths.Max() - 0.051, bandwidths.Max() + 0.051);
        var aggregate = json["aggregate_tokens_per_s"]!.AsArray().Select(v => (double)v!).ToArray();
        for (int i = 0; i < 2; i++)
        {
            double best = runs.Where(r => r.Jobs == i + 1).Max(r => r.TokensPerSecond);
            Assert.True(best > 0);
            Assert.InRange(aggregate[i], best - 0.051, best + 0.051); // the log prints one decimal, the JSON two
        }
    }

    [Fact]
    public async Task Repeat_OutOfRange_IsAUsageError()
    {
        var (exit, _, stderr) = await CliProcess.RunAsync(SwarmProgram.Cli, TimeSpan.FromMinutes(1), "bench", "batching", "--repeat", "0");
        Assert.Equal(2, exit);
        Assert.Contains("--repeat", stderr);
    }

    [GeneratedRegex(@"one node, +(\d+) jobs, run (\d+)/2: +([0-9.]+) tokens/s")]
    private static partial Regex RunLine();

    [GeneratedRegex(@"machine: ([0-9.]+) GB/s streaming read")]
    private static partial Regex MachineLine();

    public void Dispose() => _tmp.Dispose();
}
