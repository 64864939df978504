using System.Net;
using Swarm.Checkpoints;
using Swarm.Coordinator.Placement;
using Swarm.Model;
using Swarm.Node;
using Swarm.Tests.Model;
using Xunit;

namespace Swarm.Tests.Coordinator;

/// <summary>
/// Memory accounting by weight format: what a loaded stage really holds, what a node announces in its Hello, what its
/// start-up check demands and what placement gives it — one formula (<see cref="LayerMemory.WeightBytesPerLayer(ModelConfig, WeightFormat)"/>).
/// </summary>
public class WeightFormatMemoryTests
{
    public static TheoryData<WeightFormat> Formats => [.. WeightFormats.All];

    [Theory]
    [MemberData(nameof(Formats))]
    public void LoadedLayers_HoldExactlyTheBytesLayerMemoryCounts(WeightFormat format)
    {
        using var fx = new Fixture(Fixture.Small);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        var c = ckpt.Config;
        using var model = StageModel.Load(ckpt, 0, c.NumLayers, format);
        Assert.Equal(format, model.Weights);
        Assert.Equal(c.NumLayers * LayerMemory.WeightBytesPerLayer(c, format), model.LayerWeightBytes);
        Assert.Equal(LayerMemory.KvBytesPerTokenPerLayer(c, format.BytesPerActivation()) * c.NumLayers, model.KvBytesPerToken);
    }

    [Fact]
    public void Int8Layer_IsAboutHalfABf16Layer_AndAQuarterOfF32()
    {
        var c = Swarm.Model.Presets.Get("pythia-160m");
        double int8 = LayerMemory.WeightBytesPerLayer(c, WeightFormat.Int8);
        Assert.InRange(LayerMemory.WeightBytesPerLayer(c, WeightFormat.BF16) / int8, 1.95, 2.0);
        Assert.Equal(LayerMemory.WeightBytesPerLayer(c, WeightFormat.BF16), LayerMemory.WeightBytesPerLayer(c, WeightFormat.F16));
        Assert.InRange(LayerMemory.WeightBytesPerLayer(c, WeightFormat.F32) / int8, 3.9, 4.0);
        // f32 is what placement assumed for every node before nodes said their format: unchanged.
        Assert.Equal(LayerMemory.WeightBytesPerLayer(c, LayerMemory.PlacementBytesPerElement), LayerMemory.WeightBytesPerLayer(c, WeightFormat.F32));
    }

    [Theory]
    [InlineData("int8", WeightFormat.Int8)]
    [InlineData("bf16", WeightFormat.BF16)]
    [InlineData(null, WeightFormat.F32)]
    public void Hello_AnnouncesTheLayerBytesOfTheNodesFormat(string? weights, WeightFormat expected)
    {
        var c = new ModelConfig { NumLayers = 6, HiddenSize = 64, NumHeads = 4, IntermediateSize = 256, VocabSize = 512 };
        var options = new NodeOptions { Weights = weights, Memory = "1GB" };
        Assert.DoesNotContain(options.Validate(), e => e.Contains("--weights"));
        var profile = NodeProfile.From(options, new IPEndPoint(IPAddress.Loopback, 7000), c, 100);
        Assert.Equal(LayerMemory.WeightBytesPerLayer(c, expected), profile.LayerWeightBytes);
        Assert.Equal(LayerMemory.KvBytesPerTokenPerLayer(c, expected.BytesPerActivation()), profile.KvBytesPerTokenPerLayer);
    }

    [Fact]
    public void NodeOptions_UnknownWeights_IsReported()
    {
        var errors = new NodeOptions { Weights = "int4", Memory = "1GB" }.Validate();
        Assert.Contains(errors, e => e.Contains("--weights: 'int4'"));
    }

    [Fact]
    public void MemoryBudget_MinimumFollowsTheFormat()
    {
        var c = Swarm.Model.Presets.Get("pythia-160m");
        long int8 = LayerMemory.MinimumNodeBudgetBytes(c, WeightFormat.Int8), bf16 = LayerMemory.MinimumNodeBudgetBytes(c, WeightFormat.BF16);
        Assert.True(int8 < bf16 && bf16 < LayerMemory.MinimumNodeBudgetBytes(c, WeightFormat.F32));
        string between = ((int8 + bf16) / 2).ToString(System.Globalization.CultureInfo.InvariantCulture);
        Assert.Null(MemoryBudget.Problem(new NodeOptions { Memory = between, Weights = "int8" }, c));
        Assert.Contains("in bf16", MemoryBudget.Problem(new NodeOptions { Memory = between, Weights = "bf16" }, c));
    }

    [Fact]
    public void Placement_Int8NodeHoldsTwiceTheLayersOfABf16Node_WithTheSameMemory_WhenWeightsDominate()
    {
        var c = Swarm.Model.Presets.Get("pythia-1b");
        var policy = new MaxMinThroughputPlacementPolicy(ModelShape.FromConfig(c, LayerMemory.PlacementBytesPerElement),
            new PlacementOptions { KvReserveTokens = 0 });
        PlacementNode Node(WeightFormat f) => new()
        {
            Id = 1, MemoryBudgetBytes = 512L << 20, LayerThroughput = 100,
            LayerWeightBytes = LayerMemory.WeightBytesPerLayer(c, f),
            KvBytesPerTokenPerLayer = LayerMemory.KvBytesPerTokenPerLayer(c, f.BytesPerActivation()),
        };
        int int8 = policy.Capacity(Node(WeightFormat.Int8)), bf16 = policy.Capacity(Node(WeightFormat.BF16));
        int f32 = policy.Capacity(Node(WeightFormat.F32));
        Assert.Equal(f32, policy.Capacity(new PlacementNode { Id = 2, MemoryBudgetBytes = 512L << 20, LayerThroughput = 100 })); // unannounced = f32
        Assert.True(int8 < c.NumLayers, "the budget must not hold the whole model, or capacity is capped");
        Assert.InRange(int8, 2 * bf16 - 1, 2 * bf16 + 1);
        Assert.InRange(bf16, 2 * f32 - 1, 2 * f32 + 1);
    }

    [Fact]
    public void Placement_WithKvReserve_CountsTheNodesKvBytesToo()
    {
        var c = Swarm.Model.Presets.Get("pythia-1b");
        var options = new PlacementOptions(); // the default KV reserve
        var policy = new MaxMinThroughputPlacementPolicy(ModelShape.FromConfig(c, LayerMemory.PlacementBytesPerElement), options);
        long perLayer = LayerMemory.WeightBytesPerLayer(c, WeightFormat.Int8) + LayerMemory.KvBytesPerTokenPerLayer(c, 2) * options.KvReserveTokens;
        var node = new PlacementNode
        {
            Id = 1, MemoryBudgetBytes = 5 * perLayer + 1, LayerThroughput = 100,
            LayerWeightBytes = LayerMemory.WeightBytesPerLayer(c, WeightFormat.Int8), KvBytesPerTokenPerLayer = LayerMemory.KvBytesPerTokenPerLayer(c, 2),
        };
        Assert.Equal(5, policy.Capacity(node));
    }
}
