namespace Swarm.Coordinator.Routing;

/// <summary>Chooses one replica among interchangeable ones for a hop.</summary>
internal interface ILoadBalancingPolicy
{
    /// <summary>Name used in configuration and logs.</summary>
    string Name { get; }

    /// <summary>Picks one of <paramref name="replicas"/> (non-empty, cheapest first).</summary>
    RouteCandidate Pick(IReadOnlyList<RouteCandidate> replicas);
}

/// <summary>
/// Power of two choices (as in YARP): sample two distinct replicas at random, take the one with less in-flight
/// work (the cheaper on a tie). Seeded, so tests are deterministic; thread-safe.
/// </summary>
internal sealed class PowerOfTwoChoicesPolicy(Random random) : ILoadBalancingPolicy
{
    private readonly Lock _gate = new();

    /// <summary>Uses a shared, unseeded generator.</summary>
    public PowerOfTwoChoicesPolicy() : this(new Random()) { }

    /// <inheritdoc/>
    public string Name => "power-of-two-choices";

    /// <inheritdoc/>
    public RouteCandidate Pick(IReadOnlyList<RouteCandidate> replicas)
    {
        ArgumentOutOfRangeException.ThrowIfZero(replicas.Count);
        if (replicas.Count == 1) return replicas[0];
        int i, j;
        lock (_gate)
        {
            i = random.Next(replicas.Count);
            j = random.Next(replicas.Count - 1);
        }
        if (j >= i) j++;
        int first = Math.Min(i, j), second = Math.Max(i, j);
        return replicas[second].InFlight < replicas[first].InFlight ? replicas[second] : replicas[first];
    }
}

/// <summary>Always the replica with the least in-flight work (the cheapest on a tie).</summary>
internal sealed class LeastInFlightPolicy : ILoadBalancingPolicy
{
    /// <inheritdoc/>
    public string Name => "least-in-flight";

    /// <inheritdoc/>
    public RouteCandidate Pick(IReadOnlyList<RouteCandidate> replicas)
    {
        ArgumentOutOfRangeException.ThrowIfZero(replicas.Count);
        var best = replicas[0];
        foreach (var r in replicas) if (r.InFlight < best.InFlight) best = r;
        return best;
    }
}
