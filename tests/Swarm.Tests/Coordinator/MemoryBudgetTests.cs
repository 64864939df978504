using Swarm.Coordinator.Placement;
using Swarm.Model;
using Swarm.Node;
using Xunit;

namespace Swarm.Tests.Coordinator;

/// <summary>The node's start-up memory check and the coordinator's placement agree on what one layer needs.</summary>
public class MemoryBudgetTests
{
    private static int Capacity(ModelConfig config, long budget) =>
        new MaxMinThroughputPlacementPolicy(ModelShape.FromConfig(config, LayerMemory.PlacementBytesPerElement), new PlacementOptions())
            .Capacity(new PlacementNode { Id = 1, MemoryBudgetBytes = budget, LayerThroughput = 1 });

    [Theory]
    [InlineData("pythia-70m")]
    [InlineData("pythia-1b")]
    [InlineData("pythia-12b")]
    public void MinimumNodeBudget_IsTheSmallestBudgetPlacementGivesALayerTo(string preset)
    {
        var config = Swarm.Model.Presets.Get(preset);
        long minimum = LayerMemory.MinimumNodeBudgetBytes(config);
        Assert.Equal(1, Capacity(config, minimum));
        Assert.Equal(0, Capacity(config, minimum - 1));
    }

    [Fact]
    public void Problem_UnpinnedNodeBelowTheMinimum_NamesTheMinimumAndASuggestion()
    {
        var config = Swarm.Model.Presets.Get("pythia-70m");
        long minimum = LayerMemory.MinimumNodeBudgetBytes(config);
        string problem = MemoryBudget.Problem(new NodeOptions { Memory = "1MB" }, config)!;
        Assert.Contains(minimum.ToString("N0", System.Globalization.CultureInfo.InvariantCulture) + " bytes", problem);
        Assert.Contains($"--memory {(minimum + (1 << 20) - 1) >> 20}MB or more", problem);
        Assert.Null(MemoryBudget.Problem(new NodeOptions { Memory = minimum.ToString(System.Globalization.CultureInfo.InvariantCulture) }, config));
    }

    [Fact]
    public void Problem_PinnedLayers_AreNotChecked()
    {
        // A pinned node loads its range whatever the budget (its KV pool falls back to the minimum).
        Assert.Null(MemoryBudget.Problem(new NodeOptions { Memory = "1MB", Layers = "0:2" }, Swarm.Model.Presets.Get("pythia-70m")));
    }
}
