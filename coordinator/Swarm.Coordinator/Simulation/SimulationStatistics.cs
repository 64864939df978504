using Swarm.Coordinator.Placement;

namespace Swarm.Coordinator.Simulation;

/// <summary>How a simulated job ended.</summary>
internal enum JobEndKind { Completed, Failed, Rejected }

/// <summary>What the simulation counts as it runs, and the report made of it.</summary>
internal sealed class SimulationStatistics
{
    private readonly List<(double Ms, int Count)> _gaps = [];
    private readonly List<double> _firstTokens = [];
    private readonly List<CoverageSample> _samples = [];
    private long _completedRecoveries;

    public long Events { get; set; }
    public long Submitted { get; set; }
    public long Completed { get; private set; }
    public long Failed { get; private set; }
    public long Rejected { get; private set; }
    public long Recoveries { get; set; }
    public long Joins { get; set; }
    public long AbruptDepartures { get; set; }
    public long AnnouncedDepartures { get; set; }
    public long Moves { get; set; }
    public long FalselyDeclaredDead { get; set; }

    /// <summary>Inter-token gaps: <paramref name="count"/> tokens that each came <paramref name="ms"/> after the previous one.</summary>
    public void TokenGap(double ms, int count) => _gaps.Add((ms, count));

    public void FirstToken(double ms) => _firstTokens.Add(ms);

    public void Ended(JobEndKind kind, int recoveries)
    {
        switch (kind)
        {
            case JobEndKind.Completed: Completed++; _completedRecoveries += recoveries; break;
            case JobEndKind.Failed: Failed++; break;
            case JobEndKind.Rejected: Rejected++; break;
        }
    }

    public void Sample(TimeSpan at, CoverageReport coverage, int servingNodes) =>
        _samples.Add(new CoverageSample(Math.Round(at.TotalMinutes, 3), coverage.Replicas.Count(r => r < 2), coverage.Replicas.Count(r => r == 0),
            coverage.Replicas.IsEmpty ? 0 : coverage.Replicas.Min(), servingNodes));

    public SimulationReport Report(SimulationOptions o, IEnumerable<SimulatedNode> nodes, TimeSpan simulated, TimeSpan warmUp, TimeSpan wall)
    {
        // Load balance: each node's busy fraction over the measured window while it was present (at least 10 minutes of it).
        var end = simulated;
        var utilization = nodes
            .Select(n => (Node: n, Present: end - (n.JoinedAt > warmUp ? n.JoinedAt : warmUp)))
            .Where(x => x.Present >= TimeSpan.FromMinutes(10))
            .Select(x => x.Node.BusyMs / x.Present.TotalMilliseconds)
            .ToList();
        double mean = utilization.Count > 0 ? utilization.Average() : 0;
        double cv = mean > 0 ? Math.Sqrt(utilization.Average(u => (u - mean) * (u - mean))) / mean : 0;
        long ended = Completed + Failed + Rejected;
        return new SimulationReport
        {
            Nodes = o.Nodes, Hours = o.Hours, Seed = o.Seed, Preset = o.Preset,
            JobsSubmitted = Submitted, JobsCompleted = Completed, JobsFailed = Failed, JobsRejected = Rejected,
            CompletionRate = ended > 0 ? Math.Round((double)Completed / ended, 6) : 0,
            TimePerTokenP50Ms = Math.Round(WeightedPercentile(_gaps, 0.50), 3),
            TimePerTokenP95Ms = Math.Round(WeightedPercentile(_gaps, 0.95), 3),
            TimeToFirstTokenP50Ms = Math.Round(WeightedPercentile([.. _firstTokens.Select(f => (f, 1))], 0.50), 3),
            RecoveriesPerJob = Submitted > 0 ? Math.Round((double)Recoveries / Submitted, 6) : 0,
            NodeJoins = Joins, AbruptDepartures = AbruptDepartures, AnnouncedDepartures = AnnouncedDepartures, PlacementMoves = Moves,
            FalselyDeclaredDead = FalselyDeclaredDead,
            Coverage = _samples,
            UnderReplicatedLayersMean = _samples.Count > 0 ? Math.Round(_samples.Average(s => s.UnderReplicated), 4) : 0,
            UncoveredSampleFraction = _samples.Count > 0 ? Math.Round((double)_samples.Count(s => s.Uncovered > 0) / _samples.Count, 6) : 0,
            UtilizationMean = Math.Round(mean, 6),
            UtilizationCv = Math.Round(cv, 6),
            UtilizationMaxOverMean = mean > 0 ? Math.Round(utilization.Max() / mean, 4) : 0,
            Events = Events,
            WallSeconds = wall.TotalSeconds,
            SimulatedHours = Math.Round(simulated.TotalHours, 6),
        };
    }

    private static double WeightedPercentile(List<(double Ms, int Count)> values, double p)
    {
        if (values.Count == 0) return 0;
        var sorted = values.OrderBy(v => v.Ms).ToList();
        long total = sorted.Sum(v => (long)v.Count), target = (long)Math.Ceiling(p * total), seen = 0;
        foreach (var (ms, count) in sorted)
        {
            seen += count;
            if (seen >= target) return ms;
        }
        return sorted[^1].Ms;
    }
}
