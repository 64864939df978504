using System.CommandLine;
using Swarm.Coordinator.Simulation;

namespace Swarm.Cli.Commands;

/// <summary><c>swarm sim</c>: the discrete-event swarm simulator on the coordinator's real policies (see <see cref="SwarmSimulation"/>).</summary>
internal static class SimCommand
{
    public static Command Create()
    {
        var defaults = new SimulationOptions();
        var nodes = new Option<int>("--nodes") { Description = "Nodes online on average", DefaultValueFactory = _ => defaults.Nodes };
        var hours = new Option<double>("--hours") { Description = "Simulated hours (after a 10-minute warm-up)", DefaultValueFactory = _ => defaults.Hours };
        var seed = new Option<int>("--seed") { Description = "Seed: the same seed gives the same run", DefaultValueFactory = _ => defaults.Seed };
        var preset = new Option<string>("--preset") { Description = "Model", DefaultValueFactory = _ => defaults.Preset };
        var session = new Option<double>("--mean-session-hours") { Description = "Mean volunteer session (exponential)", DefaultValueFactory = _ => defaults.MeanSessionHours };
        var abrupt = new Option<double>("--abrupt-fraction") { Description = "Share of departures without a Leave", DefaultValueFactory = _ => defaults.AbruptFraction };
        var jobs = new Option<double>("--jobs-per-node-hour") { Description = "Job arrivals per node-hour (Poisson)", DefaultValueFactory = _ => defaults.JobsPerNodeHour };
        var tokens = new Option<int>("--tokens") { Description = "New tokens per job", DefaultValueFactory = _ => defaults.NewTokens };
        var heartbeat = new Option<string>("--heartbeat-interval") { Description = "Heartbeat interval (suspect/dead after 2.5×/5× it)", DefaultValueFactory = _ => "500ms" };
        var json = new Option<bool>("--json") { Description = "Print JSON (identical for the same seed except wall_seconds)" };
        var cmd = new Command("sim", "Simulate a volunteer swarm (churn, WAN latencies, job arrivals) on the coordinator's real placement, routing, failure detection and admission");
        foreach (var o in new Option[] { nodes, hours, seed, preset, session, abrupt, jobs, tokens, heartbeat, json }) cmd.Options.Add(o);
        cmd.SetAction(r =>
        {
            var beat = DaemonConfig.ParseDuration(r.GetValue(heartbeat)!, "--heartbeat-interval");
            var options = new SimulationOptions
            {
                Nodes = r.GetValue(nodes), Hours = r.GetValue(hours), Seed = r.GetValue(seed), Preset = r.GetValue(preset)!,
                MeanSessionHours = r.GetValue(session), AbruptFraction = r.GetValue(abrupt), JobsPerNodeHour = r.GetValue(jobs), NewTokens = r.GetValue(tokens),
                HeartbeatInterval = beat, SuspectAfter = beat * 2.5, DeadAfter = beat * 5,
            };
            var errors = options.Validate();
            if (errors.Count > 0) throw new CommandFailedException(string.Join("; ", errors));
            var report = new SwarmSimulation(options).Run();
            if (r.GetValue(json)) { Console.WriteLine(report.ToJson()); return 0; }
            Print(report);
            return 0;
        });
        return cmd;
    }

    private static void Print(SimulationReport r)
    {
        Console.WriteLine($"{r.Nodes} nodes of {r.Preset}, {r.Hours} h (seed {r.Seed}): {r.NodeJoins} joined, {r.AbruptDepartures} left abruptly, {r.AnnouncedDepartures} announced; "
            + $"{r.PlacementMoves} placement moves");
        Console.WriteLine($"jobs: {r.JobsSubmitted} submitted, {r.JobsCompleted} completed ({r.CompletionRate:P2}), {r.JobsFailed} failed, {r.JobsRejected} rejected; "
            + $"{r.RecoveriesPerJob:F3} recoveries per job");
        Console.WriteLine($"time per token p50 {r.TimePerTokenP50Ms:F1} ms, p95 {r.TimePerTokenP95Ms:F1} ms; time to first token p50 {r.TimeToFirstTokenP50Ms:F0} ms");
        Console.WriteLine($"layers with < 2 replicas: {r.UnderReplicatedLayersMean:F2} on average; some layer uncovered in {r.UncoveredSampleFraction:P1} of minutes; "
            + $"min replicas over time: {string.Join(" ", r.Coverage.Where((_, i) => i % Math.Max(1, r.Coverage.Count / 12) == 0).Select(c => c.MinReplicas))}");
        Console.WriteLine($"load balance: node utilization mean {r.UtilizationMean:P1}, cv {r.UtilizationCv:F2}, busiest ÷ mean {r.UtilizationMaxOverMean:F2}");
        Console.WriteLine($"{r.Events} events in {r.WallSeconds:F1} s wall = {r.WallSecondsPerSimulatedHour:F1} s per simulated hour ({r.SimulatedHours:F2} h simulated incl. warm-up and drain)");
    }
}
