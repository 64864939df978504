namespace Swarm.Coordinator.Routing;

/// <summary>Cost model and load balancing of the router.</summary>
internal sealed class RoutingOptions
{
    /// <summary>
    /// Each in-flight job on a node stretches its compute time by this fraction: cost = link + layers/throughput ×
    /// (1 + <c>LoadPenaltyPerInFlight</c> × in-flight). Default 0.5.
    /// </summary>
    public double LoadPenaltyPerInFlight { get; set; } = 0.5;

    /// <summary>Extra cost, in ms, of a hop through a suspected node. Default 1000 ms.</summary>
    public double SuspectPenaltyMs { get; set; } = 1000;

    /// <summary>RTT assumed for a node not yet measured, in ms. Default 1 ms.</summary>
    public double DefaultRttMs { get; set; } = 1;

    /// <summary>
    /// Extra cost, in ms, of a hop over a relayed link on top of its measured round trip: the relay's own load and the
    /// risk that it goes away. Default 5 ms.
    /// </summary>
    public double RelayPenaltyMs { get; set; } = 5;

    /// <summary>
    /// Replicas whose unloaded hop cost is within this fraction of the best replica's are interchangeable, and
    /// the load-balancing policy picks among them by in-flight work. Default 0.5 (within 1.5×).
    /// </summary>
    public double ReplicaCostTolerance { get; set; } = 0.5;

    /// <summary>
    /// How many holders of each layer a route considers (<see cref="RouteCandidateIndex"/>): the best by the router's cost
    /// estimate. Where no layer has more routable holders, routing is the exact search over every node; above it, a route
    /// costs O(layers × this) whatever the swarm's size. Default 32.
    /// </summary>
    public int CandidatesPerLayer { get; set; } = 32;

    /// <summary>Returns every problem with these options (empty when valid).</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (!(LoadPenaltyPerInFlight >= 0)) errors.Add($"{nameof(LoadPenaltyPerInFlight)} must not be negative");
        if (!(SuspectPenaltyMs >= 0)) errors.Add($"{nameof(SuspectPenaltyMs)} must not be negative");
        if (!(DefaultRttMs >= 0)) errors.Add($"{nameof(DefaultRttMs)} must not be negative");
        if (!(RelayPenaltyMs >= 0)) errors.Add($"{nameof(RelayPenaltyMs)} must not be negative");
        if (CandidatesPerLayer < 1) errors.Add($"{nameof(CandidatesPerLayer)} must be at least 1");
        if (!(ReplicaCostTolerance >= 0)) errors.Add($"{nameof(ReplicaCostTolerance)} must not be negative");
        return errors;
    }
}
