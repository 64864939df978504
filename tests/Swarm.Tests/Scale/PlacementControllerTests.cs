using Microsoft.Extensions.Time.Testing;
using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Placement;
using Swarm.Protocol;
using Xunit;

namespace Swarm.Tests.Scale;

/// <summary>
/// The placement glue the coordinator and the simulator share: joins get ranges, the evaluation tick declares a silent
/// node dead, and its loss re-covers the layers only it held.
/// </summary>
public sealed class PlacementControllerTests
{
    private static NodeInfo Node(int id) => new() { Id = id, Name = $"n{id}", Endpoint = "127.0.0.1:1", MemoryBudgetBytes = 400, LayerThroughput = 100 };

    [Fact]
    public void TickAndLost_SilentNodeHoldingTheOnlyCopy_DeclaredDeadAndItsLayersMovedToAnotherNode()
    {
        var time = new FakeTimeProvider();
        var registry = new NodeRegistry(new FailureDetectorOptions(), time);
        var control = new PlacementController(registry, new MaxMinThroughputPlacementPolicy(new ModelShape(8, 100, 0), new PlacementOptions { KvReserveTokens = 0 }), time);
        var moves = new List<RangeAssignment>();
        control.Assigned += moves.Add;
        foreach (int id in new[] { 1, 2, 3 })
        {
            var range = control.Join(Node(id));
            Assert.Equal(4, range!.Value.Count); // 400 bytes of memory, 100 per layer
            control.RangeReady(id, range.Value);
        }
        var holders = registry.Snapshot().GroupBy(n => n.Range!.Value).ToDictionary(g => g.Key, g => g.Select(n => n.Id).ToList());
        Assert.Equal(2, holders.Count); // [0,4) and [4,8), one of them twice
        int lonely = holders.Single(h => h.Value.Count == 1).Value[0];
        var lonelyRange = registry.Get(lonely)!.Range!.Value;

        var dead = new List<int>();
        for (int i = 0; i < 8 && dead.Count == 0; i++)
        {
            time.Advance(TimeSpan.FromMilliseconds(500));
            foreach (int id in new[] { 1, 2, 3 }.Where(id => id != lonely)) registry.Heartbeat(id);
            dead.AddRange(control.Tick().Dead);
        }
        Assert.Equal([lonely], dead);
        Assert.False(registry.ServingCoverage(8).IsCovered);

        control.Lost(lonely);

        var recovery = Assert.Single(moves, m => m.Reason == PlacementReason.Recover);
        Assert.Equal(lonelyRange, recovery.To);
        control.RangeReady(recovery.NodeId, recovery.To);
        Assert.True(registry.ServingCoverage(8).IsCovered);
    }

    [Fact]
    public void Join_PinnedRange_IsAssignedAsIs()
    {
        var time = new FakeTimeProvider();
        var registry = new NodeRegistry(new FailureDetectorOptions(), time);
        var control = new PlacementController(registry, new MaxMinThroughputPlacementPolicy(new ModelShape(8, 100, 0), new PlacementOptions { KvReserveTokens = 0 }), time);
        var moves = new List<RangeAssignment>();
        control.Assigned += moves.Add;

        var range = control.Join(Node(1) with { PinnedRange = new LayerRange(2, 5) });

        Assert.Equal(new LayerRange(2, 5), range);
        Assert.Equal(new RangeAssignment(1, null, new LayerRange(2, 5), PlacementReason.Join), Assert.Single(moves));
        Assert.Equal(NodeStatus.Loading, registry.Get(1)!.State);
    }
}
