using TorchSharp;
using static TorchSharp.torch;

namespace Swarm.Model;

/// <summary>
/// Tensor-parallel settings of a stage: how many shards each layer is split into and the device of each shard.
/// </summary>
public sealed class TensorParallelOptions
{
    public int Shards { get; }
    public IReadOnlyList<Device> Devices { get; }
    /// <summary>The device strings as given (for messages and telemetry).</summary>
    public IReadOnlyList<string> DeviceNames { get; }

    private TensorParallelOptions(int shards, IReadOnlyList<Device> devices, IReadOnlyList<string> names)
    {
        Shards = shards; Devices = devices; DeviceNames = names;
    }

    /// <summary>
    /// Parses <c>--tp N --devices d0,d1,…</c>. Devices: <c>cpu</c> or <c>cuda:K</c> (<c>cuda</c> = <c>cuda:0</c>); default all
    /// <c>cpu</c>; one device (e.g. <c>cpu</c>) is used by every shard, otherwise exactly N are needed. A CUDA device needs a
    /// CUDA build of libtorch with that device present. Throws <see cref="ArgumentException"/> with a message for the user.
    /// </summary>
    public static TensorParallelOptions Parse(int shards, string? devices)
    {
        if (shards < 1) throw new ArgumentException($"--tp must be ≥ 1 (got {shards})");
        var names = string.IsNullOrWhiteSpace(devices)
            ? Enumerable.Repeat("cpu", shards).ToArray()
            : devices.Split(',', StringSplitOptions.TrimEntries);
        if (names.Length == 1 && shards > 1) names = Enumerable.Repeat(names[0], shards).ToArray();
        if (names.Length != shards)
            throw new ArgumentException($"--devices lists {names.Length} devices but --tp is {shards}: give one device per shard (or one for all)");
        var parsed = names.Select(ParseDevice).ToArray();
        return new TensorParallelOptions(shards, parsed, names);
    }

    /// <summary>All shards on the CPU.</summary>
    public static TensorParallelOptions Cpu(int shards) => Parse(shards, null);

    private static Device ParseDevice(string name)
    {
        string n = name.ToLowerInvariant();
        if (n == "cpu") return CPU;
        if (n == "cuda" || n.StartsWith("cuda:", StringComparison.Ordinal))
        {
            int index = 0;
            if (n.Length > 4 && (!int.TryParse(n.AsSpan(5), out index) || index < 0))
                throw new ArgumentException($"--devices: '{name}' is not a device (expected cpu or cuda:K)");
            if (!cuda.is_available())
                throw new ArgumentException($"--devices: '{name}' requested but CUDA is not available in this build/machine");
            if (index >= cuda.device_count())
                throw new ArgumentException($"--devices: '{name}' requested but only {cuda.device_count()} CUDA device(s) are present");
            return new Device(DeviceType.CUDA, index);
        }
        throw new ArgumentException($"--devices: unknown device '{name}' (expected cpu or cuda:K)");
    }

    /// <summary>Checks that the model can be split this way; throws <see cref="ArgumentException"/> otherwise.</summary>
    public void Validate(ModelConfig c)
    {
        if (Shards > c.NumHeads)
            throw new ArgumentException($"--tp {Shards}: more shards than attention heads ({c.NumHeads})");
        if (c.NumHeads % Shards != 0)
            throw new ArgumentException($"--tp {Shards}: the model's {c.NumHeads} attention heads are not divisible by {Shards}");
        if (c.IntermediateSize % Shards != 0)
            throw new ArgumentException($"--tp {Shards}: the model's intermediate size {c.IntermediateSize} is not divisible by {Shards}");
    }

    public override string ToString() => $"tp={Shards} devices={string.Join(",", DeviceNames)}";
}
