using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Swarm.Protocol;

namespace Swarm.Node;

/// <summary>
/// Converts the elements of a floating-point <see cref="WireTensor"/> between F32, F16 and BF16 on the CPU, without
/// TorchSharp, rounding to nearest even as torch does — so the hop forwarder can turn hidden states into the wire
/// dtype off the compute thread and get the bytes torch's own conversion would give.
/// </summary>
internal static class WireDTypeConversion
{
    /// <summary>The tensor with its elements in <paramref name="target"/> (the same instance when it already is).</summary>
    /// <exception cref="ArgumentException">Either dtype is not a floating-point one, or the tensor is inconsistent.</exception>
    public static WireTensor Convert(WireTensor source, WireDType target)
    {
        if (source.DType == target) return source;
        if (source.DType == WireDType.I64 || target == WireDType.I64)
            throw new ArgumentException($"cannot convert a {source.DType} tensor to {target}", nameof(target));
        if (source.Validate() is { } error) throw new ArgumentException(error, nameof(source));
        WireTensor.EnsureLittleEndian();
        int n = (int)source.ElementCount;
        var data = new byte[n * WireTensor.ElementSize(target)];
        var src = source.Data.Span;
        if (source.DType == WireDType.F32 && target == WireDType.F16)
        {
            // The common case (f32 compute, f16 wire) without a per-element switch.
            var from = MemoryMarshal.Cast<byte, float>(src);
            var to = MemoryMarshal.Cast<byte, Half>(data.AsSpan());
            for (int i = 0; i < n; i++) to[i] = (Half)from[i];
        }
        else
        {
            for (int i = 0; i < n; i++) Write(data, target, i, Read(src, source.DType, i));
        }
        return new WireTensor { DType = target, Shape = source.Shape, Data = data };
    }

    private static float Read(ReadOnlySpan<byte> src, WireDType dtype, int i) => dtype switch
    {
        WireDType.F32 => BinaryPrimitives.ReadSingleLittleEndian(src[(i * 4)..]),
        WireDType.F16 => (float)BinaryPrimitives.ReadHalfLittleEndian(src[(i * 2)..]),
        _ => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(src[(i * 2)..]) << 16),
    };

    private static void Write(Span<byte> dst, WireDType dtype, int i, float value)
    {
        switch (dtype)
        {
            case WireDType.F32: BinaryPrimitives.WriteSingleLittleEndian(dst[(i * 4)..], value); break;
            case WireDType.F16: BinaryPrimitives.WriteHalfLittleEndian(dst[(i * 2)..], (Half)value); break;
            default: BinaryPrimitives.WriteUInt16LittleEndian(dst[(i * 2)..], ToBFloat16(value)); break;
        }
    }

    /// <summary>Round to nearest even, as c10::BFloat16 does; NaN stays a (quiet) NaN.</summary>
    private static ushort ToBFloat16(float value)
    {
        if (float.IsNaN(value)) return 0x7FC0;
        uint bits = BitConverter.SingleToUInt32Bits(value);
        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }
}
