using System.Globalization;
using Swarm.Hosting;
using Swarm.Model;

namespace Swarm.Node;

/// <summary>
/// Start-up check of <c>--memory</c>: a node that the coordinator places by memory budget must be able to hold at
/// least one layer as placement counts it for its weight format (<see cref="LayerMemory.MinimumNodeBudgetBytes(ModelConfig, WeightFormat)"/>), or it would register
/// and idle with no range. A node with pinned <c>--layers</c> loads its range whatever the budget, so it is not checked; nor
/// is a <c>--relay</c> volunteer, which relays only when its budget holds no layer.
/// </summary>
internal static class MemoryBudget
{
    /// <summary>What is wrong with the budget of <paramref name="options"/> for <paramref name="config"/>, or null when nothing is.</summary>
    public static string? Problem(NodeOptions options, ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(config);
        if (options.Layers is not null) return null;
        if (options.Relay) return null; // a relay volunteer whose budget holds no layer relays only
        var format = options.WeightFormat;
        long minimum = LayerMemory.MinimumNodeBudgetBytes(config, format);
        if (options.MemoryBytes >= minimum) return null;
        long weights = LayerMemory.WeightBytesPerLayer(config, format);
        long suggestMb = (minimum + (1 << 20) - 1) >> 20;
        return string.Create(CultureInfo.InvariantCulture,
            $"--memory {options.Memory} cannot hold one layer of this model: a node needs at least {minimum:N0} bytes " +
            $"(one layer's weights, {weights:N0} bytes in {format.Name()}, plus KV cache for {LayerMemory.KvReserveTokens:N0} tokens); " +
            $"give --memory {suggestMb}MB or more, or pin layers with --layers A:B");
    }

    /// <summary>Throws <see cref="CommandFailedException"/> (exit code 1) when <see cref="Problem"/> finds one (not checked without a local checkpoint).</summary>
    /// <exception cref="CheckpointException">The checkpoint's config.json cannot be read.</exception>
    public static void EnsureHoldsOneLayer(NodeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.FetchesWeights) return; // the model is known only at registration; placement checks the budget then
        if (Problem(options, ModelConfig.Load(options.Model)) is { } problem) throw new CommandFailedException(problem);
    }
}
