using System.Text.Json;
using System.Text.Json.Serialization;

namespace Swarm.Coordinator.Simulation;

/// <summary>Coverage at one moment of a simulation.</summary>
/// <param name="Minute">Simulated minutes since the measurement started (after the warm-up).</param>
/// <param name="UnderReplicated">Layers served by fewer than two nodes.</param>
/// <param name="Uncovered">Layers served by none.</param>
/// <param name="MinReplicas">Replicas of the least-served layer.</param>
/// <param name="ServingNodes">Nodes that could take jobs.</param>
public sealed record CoverageSample(
    [property: JsonPropertyName("minute")] double Minute,
    [property: JsonPropertyName("under_replicated")] int UnderReplicated,
    [property: JsonPropertyName("uncovered")] int Uncovered,
    [property: JsonPropertyName("min_replicas")] int MinReplicas,
    [property: JsonPropertyName("serving_nodes")] int ServingNodes);

/// <summary>What <c>swarm sim</c> prints. Everything but <see cref="WallSeconds"/> depends only on the options (and seed).</summary>
public sealed record SimulationReport
{
    [JsonPropertyName("nodes")] public int Nodes { get; init; }
    [JsonPropertyName("hours")] public double Hours { get; init; }
    [JsonPropertyName("seed")] public int Seed { get; init; }
    [JsonPropertyName("preset")] public string Preset { get; init; } = "";
    [JsonPropertyName("jobs_submitted")] public long JobsSubmitted { get; init; }
    [JsonPropertyName("jobs_completed")] public long JobsCompleted { get; init; }
    /// <summary>Jobs that failed after admission (too many route repairs, no route for the queue timeout).</summary>
    [JsonPropertyName("jobs_failed")] public long JobsFailed { get; init; }
    /// <summary>Jobs refused by admission (queue full, or queued past the timeout).</summary>
    [JsonPropertyName("jobs_rejected")] public long JobsRejected { get; init; }
    /// <summary>Completed ÷ (completed + failed + rejected).</summary>
    [JsonPropertyName("completion_rate")] public double CompletionRate { get; init; }
    /// <summary>Median time between consecutive tokens of a job as its client sees them (route repairs included).</summary>
    [JsonPropertyName("time_per_token_p50_ms")] public double TimePerTokenP50Ms { get; init; }
    [JsonPropertyName("time_per_token_p95_ms")] public double TimePerTokenP95Ms { get; init; }
    [JsonPropertyName("time_to_first_token_p50_ms")] public double TimeToFirstTokenP50Ms { get; init; }
    [JsonPropertyName("recoveries_per_job")] public double RecoveriesPerJob { get; init; }
    [JsonPropertyName("node_joins")] public long NodeJoins { get; init; }
    [JsonPropertyName("abrupt_departures")] public long AbruptDepartures { get; init; }
    [JsonPropertyName("announced_departures")] public long AnnouncedDepartures { get; init; }
    /// <summary>Recovery and rebalancing moves the placement controller made (joins not counted).</summary>
    [JsonPropertyName("placement_moves")] public long PlacementMoves { get; init; }
    [JsonPropertyName("falsely_declared_dead")] public long FalselyDeclaredDead { get; init; }
    /// <summary>Coverage sampled every simulated minute: layers under-replicated over time.</summary>
    [JsonPropertyName("coverage")] public IReadOnlyList<CoverageSample> Coverage { get; init; } = [];
    [JsonPropertyName("under_replicated_layers_mean")] public double UnderReplicatedLayersMean { get; init; }
    /// <summary>Fraction of samples in which some layer was served by nobody.</summary>
    [JsonPropertyName("uncovered_sample_fraction")] public double UncoveredSampleFraction { get; init; }
    /// <summary>Load balance: mean busy fraction of nodes, its coefficient of variation, and the busiest node over the mean.</summary>
    [JsonPropertyName("utilization_mean")] public double UtilizationMean { get; init; }
    [JsonPropertyName("utilization_cv")] public double UtilizationCv { get; init; }
    [JsonPropertyName("utilization_max_over_mean")] public double UtilizationMaxOverMean { get; init; }
    [JsonPropertyName("events")] public long Events { get; init; }
    [JsonPropertyName("simulated_hours")] public double SimulatedHours { get; init; }
    /// <summary>Wall-clock seconds the run took: the one field that differs between runs with the same seed.</summary>
    [JsonPropertyName("wall_seconds")] public double WallSeconds { get; init; }

    /// <summary>Wall seconds per simulated hour (warm-up and drain included).</summary>
    [JsonIgnore] public double WallSecondsPerSimulatedHour => SimulatedHours > 0 ? WallSeconds / SimulatedHours : 0;

    /// <summary>The report as one line of JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this);
}
