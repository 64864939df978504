using Swarm.Coordinator.Membership;

namespace Swarm.Coordinator.Nat;

/// <summary>
/// Which volunteer relays (<c>swarm node --relay</c>) may carry a hop whose punching failed, best first — pure decision
/// logic, no I/O. A candidate volunteered, is reachable directly, is alive and not banned, joining, loading or serving
/// (not draining, suspect, dead or gone), is neither end of the hop, and has not already failed this hop. Relays off the
/// route come before relays on it (a stage of the route would carry the route's traffic twice); among equals, the lower
/// estimated round trip upstream → relay → downstream wins (a link either end measured to the relay, else the two nodes'
/// round trips to the coordinator added, a path through the coordinator's vantage point). The caller falls back to the
/// coordinator's own relay when the list is empty.
/// </summary>
internal static class RelayChooser
{
    /// <summary>The volunteer relays for the hop <paramref name="from"/> → <paramref name="to"/>, best first.</summary>
    /// <param name="nodes">The swarm's members now.</param>
    /// <param name="from">The upstream node (it connects through the relay).</param>
    /// <param name="to">The downstream node.</param>
    /// <param name="route">The nodes of the route the hop belongs to.</param>
    /// <param name="failed">Relays that already failed this hop (never chosen for it again).</param>
    public static IReadOnlyList<NodeSnapshot> Rank(IReadOnlyList<NodeSnapshot> nodes, int from, int to, IReadOnlyCollection<int> route, IReadOnlyCollection<int> failed)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        var up = nodes.FirstOrDefault(n => n.Id == from);
        var down = nodes.FirstOrDefault(n => n.Id == to);
        return [.. nodes
            .Where(n => IsEligible(n) && n.Id != from && n.Id != to && !failed.Contains(n.Id))
            .OrderBy(n => route.Contains(n.Id))
            .ThenBy(n => RoundTripMs(up, n) + RoundTripMs(n, down))
            .ThenBy(n => n.Id)];
    }

    /// <summary>True when <paramref name="node"/> may relay at all (volunteered, reachable, alive, not banned, not leaving).</summary>
    public static bool IsEligible(NodeSnapshot node) =>
        node.Info.OffersRelay && node.Info.Reachable && node.State is NodeStatus.Joining or NodeStatus.Loading or NodeStatus.Serving;

    private static double RoundTripMs(NodeSnapshot? a, NodeSnapshot? b)
    {
        if (a is null || b is null) return 0;
        foreach (var link in a.Links)
            if (link.ToNodeId == b.Id && link.RttMs > 0) return link.RttMs;
        foreach (var link in b.Links)
            if (link.ToNodeId == a.Id && link.RttMs > 0) return link.RttMs;
        return (a.RttMs ?? 0) + (b.RttMs ?? 0);
    }
}
