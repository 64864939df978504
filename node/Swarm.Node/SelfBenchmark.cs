using System.Diagnostics;
using Swarm.Model;
using static TorchSharp.torch;

namespace Swarm.Node;

/// <summary>
/// A short start-up measurement of how fast this machine runs one layer of the model at batch 1:
/// the four GEMVs of a GPT-NeoX layer with random weights of the model's shape (they dominate a decode
/// step). The result, in layer·tokens per second, is what the node announces for placement and routing.
/// </summary>
internal static class SelfBenchmark
{
    public static double LayerTokensPerSecond(ModelConfig c, WeightFormat weights, int steps = 12)
    {
        using var scope = NewDisposeScope();
        using var _ = inference_mode();
        long h = c.HiddenSize, i = c.IntermediateSize;
        var dtype = weights.ComputeDtype();
        int parallelism = ComputePool.Shared.Workers + 1;
        var layers = new[]
        {
            LinearWeights.Create(randn(3 * h, h), null, weights, parallelism),
            LinearWeights.Create(randn(h, h), null, weights, parallelism),
            LinearWeights.Create(randn(i, h), null, weights, parallelism),
            LinearWeights.Create(randn(h, i), null, weights, parallelism),
        };
        try
        {
            var x = randn(1, h).to_type(dtype);
            var up = randn(1, i).to_type(dtype);
            void Step()
            {
                using var s = NewDisposeScope();
                layers[0].Forward(x); layers[1].Forward(x); layers[2].Forward(x); layers[3].Forward(up);
            }
            Step();
            var sw = Stopwatch.StartNew();
            for (int k = 0; k < steps; k++) Step();
            return steps / sw.Elapsed.TotalSeconds;
        }
        finally
        {
            foreach (var d in layers) d.Dispose();
        }
    }
}
