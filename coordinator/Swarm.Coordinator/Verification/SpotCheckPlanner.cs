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
/// (a newcomer, or one that failed one) — and the checked hop is the one with that rate and, among those, the fewest
/// passed checks (the newest; further ties drawn at random). One hop per session is checked, so that no node of the
/// route sees a copy order (see <see cref="ShadowCopy"/>): when two nodes of a route are on probation, one of them runs
/// that session unchecked. The shadow is a random routable, alive node outside the route whose range holds the checked
/// hop's layers.
/// </summary>
internal sealed class SpotCheckPlanner(VerificationOptions options, Random random)
{
    /// <summary>The settings.</summary>
    public VerificationOptions Options => options;

    /// <summary>The rate at which sessions through <paramref name="node"/> are checked.</summary>
    public double RateOf(NodeSnapshot node) =>
        options.Rate <= 0 ? 0 : IsOnProbation(node) ? options.ProbationRate : options.Rate;

    /// <summary>
    /// True while <paramref name="node"/> has passed fewer checks than probation asks: <see cref="VerificationOptions.ProbationChecks"/>,
    /// once more for every check it failed. Never when checks are off.
    /// </summary>
    public bool IsOnProbation(NodeSnapshot node) => options.IsOnProbation(node.ChecksPassed, node.ChecksFailed);

    /// <summary>The hop to check on <paramref name="route"/> and its shadow, or null (not drawn, or no second replica).</summary>
    /// <param name="route">The session's route.</param>
    /// <param name="nodes">The registry's nodes now.</param>
    /// <param name="alwaysOnProbation">
    /// Check the session for certain when the chosen hop is on probation (a stream that sends only checked tokens,
    /// <see cref="VerificationOptions.StreamVerifiedOnly"/>), instead of at the probation rate.
    /// </param>
    public (int HopIndex, NodeSnapshot Shadow)? Choose(Route route, IReadOnlyList<NodeSnapshot> nodes, bool alwaysOnProbation = false)
    {
        if (options.Rate <= 0) return null;
        var byId = nodes.ToDictionary(n => n.Id);
        var onRoute = route.NodeIds.ToHashSet();
        // Only hops with a second replica can be checked (a range with one replica never is).
        var shadowsOf = route.Hops.Select(h => nodes.Where(n => n.IsRoutable && n.Health == NodeHealth.Alive && !onRoute.Contains(n.Id)
            && n.Range is { } r && r.Start <= h.Layers.Start && r.End >= h.Layers.End).ToArray()).ToArray();
        var checkable = Enumerable.Range(0, route.Hops.Count).Where(i => shadowsOf[i].Length > 0 && byId.ContainsKey(route.Hops[i].NodeId)).ToArray();
        if (checkable.Length == 0) return null;
        var hops = route.Hops.Select(h => byId.GetValueOrDefault(h.NodeId)).ToArray();
        double top = checkable.Max(i => RateOf(hops[i]!));
        var tied = checkable.Where(i => RateOf(hops[i]!) == top).ToArray();
        int fewest = tied.Min(i => hops[i]!.ChecksPassed);
        tied = [.. tied.Where(i => hops[i]!.ChecksPassed == fewest)];
        double draw;
        int pick;
        lock (random)
        {
            draw = random.NextDouble();
            pick = tied[random.Next(tied.Length)];
        }
        if (draw >= top && !(alwaysOnProbation && IsOnProbation(hops[pick]!))) return null;
        var shadows = shadowsOf[pick];
        lock (random) return (pick, shadows[random.Next(shadows.Length)]);
    }
}
