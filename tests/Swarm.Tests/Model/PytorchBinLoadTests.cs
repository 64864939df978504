using Swarm.Checkpoints;
using Swarm.Model;
using Xunit;
using static TorchSharp.torch;

namespace Swarm.Tests.Model;

public class PytorchBinLoadTests
{
    [Fact]
    public void CheckpointOpen_FolderWithOnlyPytorchModelBin_LoadsAndMatchesReference()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"swarm-bin-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            foreach (var f in Directory.GetFiles(Path.Combine(Fixture.Root, "pytorch-bin", "neox-tiny")))
                File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            Assert.False(File.Exists(Path.Combine(dir, "model.safetensors")));
            using var fx = new Fixture(Fixture.Tiny);
            using var ckpt = Checkpoint.Open(dir);
            using var model = StageModel.Load(ckpt, 0, ckpt.Config.NumLayers);
            using var scope = NewDisposeScope();
            using var session = new StageSession(model);
            var logits = session.Forward(fx.Ref("prompt.3"), allPositions: true);
            Assert.True((logits - fx.Ref("logits.3")).abs().max().item<float>() <= fx.LogitTolerance);
            Assert.True(File.Exists(Path.Combine(dir, "model.safetensors"))); // converted once, beside the .bin
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
