using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Routing;
using Swarm.Protocol;

namespace Swarm.Coordinator.Verification;

/// <summary>A session's spot check: which hop of its route is checked, and the second replica that runs the same steps.</summary>
/// <param name="HopIndex">Index of the checked hop in the route.</param>
/// <param name="CheckedNode">The checked hop's node.</param>
/// <param name="Shadow">The second replica, as a one-hop route with the checked hop's layers.</param>
/// <param name="ShadowSession">The session the copies run in on the shadow.</param>
internal sealed record SpotCheckPlan(int HopIndex, int CheckedNode, Hop Shadow, long ShadowSession);

/// <summary>
/// Decides which sessions are spot-checked (pure; seeded randomness): a session is checked with the highest check
/// rate of its route's nodes — the base rate, or the probation rate for a node that has not yet passed enough checks
/// (a newcomer, or one that failed one) — and the checked hop is the one with that rate (ties drawn at random). The
/// shadow is a random routable, alive node outside the route whose range holds the checked hop's layers.
/// </summary>
internal sealed class SpotCheckPlanner(VerificationOptions options, Random random)
{
    /// <summary>The settings.</summary>
    public VerificationOptions Options => options;

    /// <summary>The rate at which sessions through <paramref name="node"/> are checked.</summary>
    public double RateOf(NodeSnapshot node) =>
        options.Rate <= 0 ? 0
        : node.ChecksPassed < options.ProbationChecks * (1 + node.ChecksFailed) ? options.ProbationRate
        : options.Rate;

    /// <summary>The hop to check on <paramref name="route"/> and its shadow, or null (not drawn, or no second replica).</summary>
    public (int HopIndex, NodeSnapshot Shadow)? Choose(Route route, IReadOnlyList<NodeSnapshot> nodes)
    {
        if (options.Rate <= 0) return null;
        var byId = nodes.ToDictionary(n => n.Id);
        var rates = route.Hops.Select(h => byId.TryGetValue(h.NodeId, out var n) ? RateOf(n) : 0).ToArray();
        double top = rates.Max();
        double draw;
        int pick;
        lock (random)
        {
            draw = random.NextDouble();
            var tied = Enumerable.Range(0, rates.Length).Where(i => rates[i] == top).ToArray();
            pick = tied[random.Next(tied.Length)];
        }
        if (draw >= top) return null;
        var layers = route.Hops[pick].Layers;
        var onRoute = route.NodeIds.ToHashSet();
        var shadows = nodes.Where(n => n.IsRoutable && n.Health == NodeHealth.Alive && !onRoute.Contains(n.Id)
            && n.Range is { } r && r.Start <= layers.Start && r.End >= layers.End).ToArray();
        if (shadows.Length == 0) return null;
        lock (random) return (pick, shadows[random.Next(shadows.Length)]);
    }
}
