using Swarm.Protocol;
using TorchSharp;

namespace Swarm.Engine;

/// <summary>Copies between <see cref="WireTensor"/> (bytes on the wire) and TorchSharp tensors.</summary>
public static class WireTensorConversion
{
    /// <summary>
    /// Copies a TorchSharp tensor (any device, any layout) into a wire tensor of dtype <paramref name="wire"/>,
    /// converting element type on the way (e.g. F32 hidden states to F16 for the wire). The input is not disposed.
    /// </summary>
    /// <exception cref="ArgumentException">The tensor's dtype cannot be converted to <paramref name="wire"/> or it exceeds 2 GB.</exception>
    public static WireTensor FromTensor(torch.Tensor tensor, WireDType wire)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        WireTensor.EnsureLittleEndian();
        var target = ToScalarType(wire);
        bool srcIsInt = tensor.dtype is torch.ScalarType.Int64 or torch.ScalarType.Int32 or torch.ScalarType.Int16 or torch.ScalarType.Int8 or torch.ScalarType.Byte;
        if (srcIsInt != (wire == WireDType.I64))
            throw new ArgumentException($"cannot put a {tensor.dtype} tensor on the wire as {wire}", nameof(tensor));
        using var scope = torch.NewDisposeScope();
        var t = tensor.cpu();
        if (t.dtype != target) t = t.to_type(target);
        t = t.contiguous();
        long byteCount = t.numel() * WireTensor.ElementSize(wire);
        if (byteCount > int.MaxValue) throw new ArgumentException($"tensor of {byteCount} bytes is too large for the wire", nameof(tensor));
        var data = byteCount == 0 ? [] : t.bytes.ToArray();
        return new WireTensor { DType = wire, Shape = tensor.shape, Data = data };
    }

    /// <summary>
    /// Creates a CPU TorchSharp tensor holding a copy of the data, converted to <paramref name="as"/> when given
    /// (e.g. F16 wire data back to F32 for compute). The caller owns (disposes) the result.
    /// </summary>
    /// <exception cref="InvalidDataException">The tensor is inconsistent (see <see cref="WireTensor.Validate"/>).</exception>
    public static torch.Tensor ToTensor(this WireTensor wire, torch.ScalarType? @as = null)
    {
        WireTensor.EnsureLittleEndian();
        if (wire.Validate() is { } error) throw new InvalidDataException(error);
        var t = torch.empty(wire.Shape, ToScalarType(wire.DType));
        if (wire.Data.Length > 0) wire.Data.Span.CopyTo(t.bytes);
        if (@as is { } target && target != t.dtype)
        {
            var converted = t.to_type(target);
            t.Dispose();
            return converted;
        }
        return t;
    }

    /// <summary>The TorchSharp scalar type of a wire dtype.</summary>
    public static torch.ScalarType ToScalarType(this WireDType dtype) => dtype switch
    {
        WireDType.F32 => torch.ScalarType.Float32,
        WireDType.F16 => torch.ScalarType.Float16,
        WireDType.BF16 => torch.ScalarType.BFloat16,
        WireDType.I64 => torch.ScalarType.Int64,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown wire dtype"),
    };
}
