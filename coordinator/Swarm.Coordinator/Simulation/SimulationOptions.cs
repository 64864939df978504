namespace Swarm.Coordinator.Simulation;

/// <summary>What <c>swarm sim</c> simulates. Defaults in each property's doc.</summary>
public sealed record SimulationOptions
{
    /// <summary>Preset of the model served (default pythia-12b).</summary>
    public string Preset { get; init; } = "pythia-12b";

    /// <summary>Nodes online at any time on average (default 100): the initial swarm, kept up by arrivals that replace departures.</summary>
    public int Nodes { get; init; } = 100;

    /// <summary>Simulated hours after the initial swarm has joined (default 1).</summary>
    public double Hours { get; init; } = 1;

    /// <summary>Seed of every random draw (default 1): the same seed gives the same run.</summary>
    public int Seed { get; init; } = 1;

    /// <summary>Mean length of a volunteer's session, exponentially distributed (default 8 h: about 12 % of nodes leave per hour).</summary>
    public double MeanSessionHours { get; init; } = 8;

    /// <summary>Fraction of departures that are abrupt (no Leave; found by missed heartbeats) rather than announced (default 0.5).</summary>
    public double AbruptFraction { get; init; } = 0.5;

    /// <summary>How long an announced departure waits before the node disconnects (default 30 s).</summary>
    public TimeSpan LeaveGrace { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Jobs submitted per node-hour, a Poisson process (default 10).</summary>
    public double JobsPerNodeHour { get; init; } = 10;

    /// <summary>Prompt tokens per job (default 64).</summary>
    public int PromptTokens { get; init; } = 64;

    /// <summary>New tokens per job (default 128).</summary>
    public int NewTokens { get; init; } = 128;

    /// <summary>Jobs generating at once (the coordinator's --max-concurrent-jobs); 0 (default): as many as nodes.</summary>
    public int MaxConcurrentJobs { get; init; }

    /// <summary>Node heartbeat interval (default 500 ms, as the coordinator's).</summary>
    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromMilliseconds(500);

    /// <summary>Silence before a node is suspect (default 1.25 s).</summary>
    public TimeSpan SuspectAfter { get; init; } = TimeSpan.FromMilliseconds(1250);

    /// <summary>Silence before a node is declared dead (default 2.5 s).</summary>
    public TimeSpan DeadAfter { get; init; } = TimeSpan.FromMilliseconds(2500);

    /// <summary>How often the coordinator runs failure detection and placement maintenance (default 250 ms, as the coordinator).</summary>
    public TimeSpan EvaluationInterval { get; init; } = TimeSpan.FromMilliseconds(250);

    /// <summary>How often coverage is sampled for the report (default 1 min).</summary>
    public TimeSpan SampleInterval { get; init; } = TimeSpan.FromMinutes(1);

    /// <summary>Route repairs per job before it fails (default 8, as the coordinator).</summary>
    public int MaxRecoveriesPerJob { get; init; } = 8;

    /// <summary>Problems with these options (empty when valid).</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (Nodes < 1) errors.Add("--nodes must be at least 1");
        if (!(Hours > 0)) errors.Add("--hours must be positive");
        if (!(MeanSessionHours > 0)) errors.Add("--mean-session-hours must be positive");
        if (AbruptFraction is < 0 or > 1) errors.Add("--abrupt-fraction must be within 0–1");
        if (JobsPerNodeHour < 0) errors.Add("--jobs-per-node-hour must not be negative");
        if (PromptTokens < 1 || NewTokens < 1) errors.Add("prompt and new tokens must be at least 1");
        if (HeartbeatInterval <= TimeSpan.Zero || SuspectAfter <= HeartbeatInterval || DeadAfter <= SuspectAfter)
            errors.Add("need 0 < heartbeat interval < suspect-after < dead-after");
        if (EvaluationInterval <= TimeSpan.Zero || SampleInterval <= TimeSpan.Zero) errors.Add("intervals must be positive");
        return errors;
    }
}
