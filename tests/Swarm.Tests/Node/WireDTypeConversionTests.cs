using Swarm.Engine;
using Swarm.Node;
using Swarm.Protocol;
using Xunit;
using static TorchSharp.torch;

namespace Swarm.Tests.Node;

/// <summary>The forwarder's torch-free dtype conversion gives exactly the bytes torch's own conversion gives.</summary>
public class WireDTypeConversionTests
{
    private static float[] Values()
    {
        var rng = new Random(3);
        var values = new List<float>
        {
            0f, -0f, 1f, -1f, 65504f, 65519.99f, 65520f, 1e6f, -1e6f, 6.1e-5f, 5.96e-8f, 2.9e-8f, 1e-10f, 1f / 3,
            float.PositiveInfinity, float.NegativeInfinity, float.Epsilon, float.MaxValue,
            1.00048828125f, 1.00146484375f,   // ties in f16: round to even
            1.00390625f, 1.01171875f,         // ties in bf16: round to even
        };
        for (int i = 0; i < 4000; i++) values.Add((float)((rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-9, 6))));
        for (int i = 0; i < 1000; i++) values.Add(BitConverter.Int32BitsToSingle(rng.Next()) is var f && float.IsFinite(f) ? f : 0f);
        return values.ToArray();
    }

    private static WireTensor F32(float[] values) =>
        new() { DType = WireDType.F32, Shape = [1, values.Length], Data = values.SelectMany(BitConverter.GetBytes).ToArray() };

    [Theory]
    [InlineData(WireDType.F16)]
    [InlineData(WireDType.BF16)]
    public void FromF32_MatchesTorchBitForBit(WireDType target)
    {
        var values = Values();
        using var t = tensor(values).reshape(1, values.Length);
        var expected = WireTensorConversion.FromTensor(t, target);
        var got = WireDTypeConversion.Convert(F32(values), target);
        Assert.Equal(target, got.DType);
        Assert.Equal(expected.Shape, got.Shape);
        Assert.Equal(expected.Data.ToArray(), got.Data.ToArray());
    }

    [Theory]
    [InlineData(WireDType.F16)]
    [InlineData(WireDType.F32)]
    public void FromBF16_MatchesTorchBitForBit(WireDType target)
    {
        // The bf16 compute path: hidden states in bf16 go on the wire as f16 (or f32).
        var values = Values();
        using var t = tensor(values).reshape(1, values.Length).to_type(ScalarType.BFloat16);
        var bf16 = WireTensorConversion.FromTensor(t, WireDType.BF16);
        Assert.Equal(WireTensorConversion.FromTensor(t, target).Data.ToArray(), WireDTypeConversion.Convert(bf16, target).Data.ToArray());
    }

    [Fact]
    public void NaN_StaysNaN_AndSameDType_IsTheSameInstance()
    {
        var nan = F32([float.NaN]);
        Assert.True(Half.IsNaN(BitConverter.ToHalf(WireDTypeConversion.Convert(nan, WireDType.F16).Data.Span)));
        var bf = WireDTypeConversion.Convert(nan, WireDType.BF16).Data.Span;
        Assert.True(float.IsNaN(BitConverter.Int32BitsToSingle(BitConverter.ToUInt16(bf) << 16)));
        Assert.Same(nan, WireDTypeConversion.Convert(nan, WireDType.F32));
        Assert.Throws<ArgumentException>(() => WireDTypeConversion.Convert(WireTensor.FromTokenIds([1, 2]), WireDType.F16));
    }
}
