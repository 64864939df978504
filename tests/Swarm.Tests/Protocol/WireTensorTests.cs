using Swarm.Engine;
using Swarm.Protocol;
using TorchSharp;
using Xunit;

namespace Swarm.Tests.Protocol;

public class WireTensorTests
{
    [Fact]
    public void FromTensor_F32AsF16_ConvertsAndRoundTrips()
    {
        using var scope = torch.NewDisposeScope();
        var values = new float[] { 1f, -2f, 0.5f, 65504f, 1e-3f, 3.14159f };
        var t = torch.tensor(values).reshape(1, 2, 3);
        var wire = WireTensorConversion.FromTensor(t, WireDType.F16);
        Assert.Equal(WireDType.F16, wire.DType);
        Assert.Equal(new long[] { 1, 2, 3 }, wire.Shape);
        Assert.Equal(12, wire.Data.Length);
        Assert.Null(wire.Validate());
        // 1.0 in binary16 is 0x3C00, little-endian.
        Assert.Equal(new byte[] { 0x00, 0x3C }, wire.Data[..2].ToArray());

        var back = wire.ToTensor(torch.ScalarType.Float32);
        Assert.Equal(torch.ScalarType.Float32, back.dtype);
        Assert.Equal(new long[] { 1, 2, 3 }, back.shape);
        var got = back.data<float>().ToArray();
        for (int i = 0; i < values.Length; i++)
            Assert.Equal((float)(Half)values[i], got[i]);
    }

    [Fact]
    public void FromTensor_F32_IsByteExact()
    {
        using var scope = torch.NewDisposeScope();
        var t = torch.randn(2, 3, 5, generator: new torch.Generator(7));
        var wire = WireTensorConversion.FromTensor(t, WireDType.F32);
        var back = wire.ToTensor();
        Assert.Equal(t.data<float>().ToArray(), back.data<float>().ToArray());
    }

    [Fact]
    public void FromTensor_NonContiguous_CopiesLogicalOrder()
    {
        using var scope = torch.NewDisposeScope();
        var t = torch.arange(6, dtype: torch.ScalarType.Float32).reshape(2, 3).t(); // [[0,3],[1,4],[2,5]]
        Assert.False(t.is_contiguous());
        var back = WireTensorConversion.FromTensor(t, WireDType.F32).ToTensor();
        Assert.Equal(new float[] { 0, 3, 1, 4, 2, 5 }, back.data<float>().ToArray());
    }

    [Fact]
    public void FromTokenIds_MatchesFromTensor()
    {
        using var scope = torch.NewDisposeScope();
        var ids = new long[] { 0, 1, 50_000, 12 };
        var a = WireTensor.FromTokenIds(ids);
        var b = WireTensorConversion.FromTensor(torch.tensor(ids).reshape(1, 4), WireDType.I64);
        Assert.Equal(b.Shape, a.Shape);
        Assert.Equal(b.Data.ToArray(), a.Data.ToArray());
        Assert.Equal(ids, a.ToTensor().data<long>().ToArray());
    }

    [Fact]
    public void FromTensor_FloatAsI64_Throws()
    {
        using var t = torch.ones(2);
        var ex = Assert.Throws<ArgumentException>(() => WireTensorConversion.FromTensor(t, WireDType.I64));
        Assert.Contains("cannot put a Float32 tensor on the wire as I64", ex.Message);
    }

    [Fact]
    public void ToTensor_Inconsistent_ThrowsWithReason()
    {
        var wire = new WireTensor { DType = WireDType.F32, Shape = [2, 2], Data = new byte[12] };
        var ex = Assert.Throws<InvalidDataException>(() => wire.ToTensor());
        Assert.Equal("tensor: shape [2,2] of F32 needs 16 bytes, got 12", ex.Message);
    }

    [Fact]
    public void Validate_OverflowingShape_Reports()
    {
        var wire = new WireTensor { DType = WireDType.F32, Shape = [long.MaxValue / 2, 4], Data = new byte[4] };
        Assert.Contains("overflows", wire.Validate());
    }

    [Fact]
    public void FromTensor_Bf16_RoundTrips()
    {
        using var scope = torch.NewDisposeScope();
        var t = torch.tensor(new float[] { 1f, 2f, -0.5f });
        var back = WireTensorConversion.FromTensor(t, WireDType.BF16).ToTensor(torch.ScalarType.Float32);
        Assert.Equal(new float[] { 1f, 2f, -0.5f }, back.data<float>().ToArray());
    }

    [Fact]
    public void FirstTokenIdOutside_ReadsTheWireBytes()
    {
        Assert.Null(WireTensor.FromTokenIds([0, 5, 9]).FirstTokenIdOutside(10));
        Assert.Equal(10, WireTensor.FromTokenIds([0, 10, -1]).FirstTokenIdOutside(10));
        Assert.Equal(-1, WireTensor.FromTokenIds([3, -1, 10]).FirstTokenIdOutside(10));
        Assert.Equal(long.MinValue, WireTensor.FromTokenIds([long.MinValue]).FirstTokenIdOutside(10));
        var hidden = new WireTensor { DType = WireDType.F32, Shape = [1, 1, 1], Data = new byte[4] };
        Assert.Throws<InvalidOperationException>(() => hidden.FirstTokenIdOutside(10));
    }
}
