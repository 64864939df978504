using System.Collections.Immutable;
using Swarm.Protocol;

namespace Swarm.Coordinator.Placement;

/// <summary>How well a layout covers the model: replicas and throughput per layer, and the gaps.</summary>
internal sealed record CoverageReport
{
    /// <summary>Layers in the model.</summary>
    public required int NumLayers { get; init; }

    /// <summary>Replicas per layer (index = layer).</summary>
    public required ImmutableArray<int> Replicas { get; init; }

    /// <summary>Sum of the holders' per-layer throughput contributions, per layer (tokens/s).</summary>
    public required ImmutableArray<double> Throughput { get; init; }

    /// <summary>Maximal ranges of layers no node holds.</summary>
    public required IReadOnlyList<LayerRange> Uncovered { get; init; }

    /// <summary>True when every layer has at least one replica.</summary>
    public bool IsCovered => Uncovered.Count == 0;

    /// <summary>The weakest layer's throughput; 0 when a layer is uncovered.</summary>
    public double MinThroughput => Throughput.IsEmpty ? 0 : Throughput.Min();

    /// <summary>"layers 4-5, layer 9 are not served by any node", for errors (HTTP 503); empty when covered.</summary>
    public string DescribeUncovered() => IsCovered ? "" :
        $"{LayerRange.DescribeAll(Uncovered)} {(Uncovered.Count == 1 && Uncovered[0].Count == 1 ? "is" : "are")} not served by any node";

    /// <summary>Coverage of <paramref name="nodes"/>' current ranges (nodes without a range are ignored).</summary>
    public static CoverageReport Of(int numLayers, IEnumerable<PlacementNode> nodes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(numLayers, 1);
        var replicas = new int[numLayers];
        var throughput = new double[numLayers];
        foreach (var n in nodes)
        {
            if (n.Range is not LayerRange r) continue;
            double perLayer = n.LayerThroughput / r.Count;
            for (int l = r.Start; l < Math.Min(r.End, numLayers); l++)
            {
                replicas[l]++;
                throughput[l] += perLayer;
            }
        }
        return new CoverageReport
        {
            NumLayers = numLayers,
            Replicas = [.. replicas],
            Throughput = [.. throughput],
            Uncovered = LayerRange.FromMask(numLayers, l => replicas[l] == 0),
        };
    }
}
