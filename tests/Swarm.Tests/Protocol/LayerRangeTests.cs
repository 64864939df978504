using Swarm.Protocol;
using Xunit;

namespace Swarm.Tests.Protocol;

/// <summary>The swarm's one layer-range type: wire struct, placement and routing helpers, CLI notation.</summary>
public class LayerRangeTests
{
    [Fact]
    public void ParseFormatDescribeContains()
    {
        Assert.True(LayerRange.TryParse("2:5", out var r));
        Assert.Equal(new LayerRange(2, 5), r);
        Assert.Equal("[2,5)", r.ToString());
        Assert.Equal("2:5", r.ToCliNotation());
        Assert.Equal("layers 2-4", r.Describe());
        Assert.True(r.Contains(2) && r.Contains(4) && !r.Contains(5));
        Assert.True(r.Contains(new LayerRange(3, 5)) && !r.Contains(new LayerRange(3, 6)));
        Assert.True(r.Overlaps(new LayerRange(4, 9)) && !r.Overlaps(new LayerRange(5, 9)));
        Assert.False(new LayerRange(5, 5).IsValid); // the wire type does not throw; MessageValidator rejects it
        Assert.Equal("layer 7", new LayerRange(7, 8).Describe());
        Assert.Equal("layers 0-1, layer 5", LayerRange.DescribeAll([new LayerRange(0, 2), new LayerRange(5, 6)]));
        Assert.Equal("none", LayerRange.DescribeAll([]));
        Assert.Equal([new LayerRange(1, 3), new LayerRange(4, 5)], LayerRange.FromMask(6, l => l is 1 or 2 or 4));
        Assert.False(LayerRange.TryParse("5:2", out _));
        Assert.False(LayerRange.TryParse("x:2", out _));
        Assert.False(LayerRange.TryParse("-1:2", out _));
        Assert.False(LayerRange.TryParse("+1:2", out _));   // --layers takes plain digits only
        Assert.False(LayerRange.TryParse(" 1:2", out _));
    }
}
