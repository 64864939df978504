using Swarm.Protocol;

namespace Swarm.Coordinator.Membership;

/// <summary>
/// Which nodes a node assigned a range should ask for that range's tensors before the model source's URL: the other
/// sharing nodes that serve an overlapping range (a node holds the tensors of the layers it serves, with the
/// embedding when it starts at layer 0 and the head when it ends at the last — which overlapping ranges share too).
/// Pure: decided from a registry snapshot.
/// </summary>
internal static class WeightPeers
{
    /// <summary>
    /// Data endpoints of the nodes that can serve tensors of <paramref name="range"/> to node <paramref name="nodeId"/>:
    /// most shared layers first, then least loaded; at most <see cref="ProtocolInfo.MaxWeightPeers"/>.
    /// </summary>
    public static string[] For(IEnumerable<NodeSnapshot> nodes, int nodeId, LayerRange range) =>
    [
        .. nodes
            .Where(n => n.Id != nodeId && n.Info.SharesWeights && n.Health == NodeHealth.Alive && n.RoutableRange is { } r && r.Overlaps(range))
            .OrderByDescending(n => Shared(n.RoutableRange!.Value, range))
            .ThenBy(n => n.InFlight)
            .ThenBy(n => n.Id)
            .Take(ProtocolInfo.MaxWeightPeers)
            .Select(n => n.Info.Endpoint),
    ];

    private static int Shared(LayerRange a, LayerRange b) => Math.Max(0, Math.Min(a.End, b.End) - Math.Max(a.Start, b.Start));
}
