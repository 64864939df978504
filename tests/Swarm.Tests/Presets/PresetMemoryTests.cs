using System.Diagnostics;
using Swarm.Checkpoints;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;
using ModelPresets = Swarm.Model.Presets;

namespace Swarm.Tests.Presets;

/// <summary>Runs alone (no parallel tests) so the resident-set measurement sees only this writer.</summary>
[CollectionDefinition(nameof(PresetMemoryTests), DisableParallelization = true)]
public sealed class PresetMemoryCollection;

[Collection(nameof(PresetMemoryTests))]
public class PresetMemoryTests(ITestOutputHelper output)
{
    /// <summary>
    /// The writer streams chunk by chunk: writing a model whose two largest tensors are 103 MB each
    /// (vocab 50304 × hidden 1024 in f16, as pythia-410m) must not grow the resident set by more than
    /// a few chunks — far below the tensor, let alone the 206 MB model. Layers are cut to one to keep
    /// the test at about a second; memory per tensor is what is being tested.
    /// </summary>
    [Fact]
    public void Writing_KeepsMemoryBounded_FarBelowTensorSize()
    {
        using var dir = new TempDir();
        var wide = ModelPresets.Get("pythia-410m") with { NumLayers = 1 };
        // Warm up code paths (JIT, libtorch init) with a tiny model so one-time costs are not counted;
        // its chunks are small, so the allocations of the real chunks are still measured.
        var tiny = ModelPresets.Get("pythia-70m") with { NumLayers = 1, HiddenSize = 64, NumHeads = 4, IntermediateSize = 256, VocabSize = 1000 };
        PresetWriter.Write(tiny, dir.Sub("warm"), ScalarType.Float16, seed: 1);
        using var proc = Process.GetCurrentProcess();
        GC.Collect();
        proc.Refresh();
        long baseline = proc.WorkingSet64, peak = baseline;
        var result = PresetWriter.Write(wide, dir.Sub("m"), ScalarType.Float16, seed: 1, new PresetWriterTests.SyncProgress(_ =>
        {
            proc.Refresh();
            peak = Math.Max(peak, proc.WorkingSet64);
        }));
        long growth = peak - baseline;
        long largestTensor = 50304L * 1024 * 2;
        output.WriteLine($"resident set growth {growth / 1e6:F1} MB while writing {result.TotalBytes / 1e6:F1} MB");
        Assert.True(result.TotalBytes > 2 * largestTensor);
        Assert.True(growth < 32L << 20, $"resident set grew by {growth >> 20} MB while writing {result.TotalBytes >> 20} MB (largest tensor {largestTensor >> 20} MB)");
    }
}
