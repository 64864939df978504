using Swarm.Checkpoints;
using static TorchSharp.torch;

namespace Swarm.Tests.Model;

/// <summary>A golden fixture copied from ../shared/fixtures: checkpoint + HF reference outputs.</summary>
public sealed class Fixture : IDisposable
{
    public static readonly string Root = Path.Combine(AppContext.BaseDirectory, "fixtures");
    public const string Tiny = "neox-tiny";
    public const string Small = "neox-small-fp16-sharded";

    private readonly SafetensorsFile _ref;
    public string Name { get; }
    public string CheckpointDir { get; }
    public int PromptCount { get; }
    /// <summary>Max |Δlogits| a correct fp32 implementation meets (fixtures README).</summary>
    public double LogitTolerance => Name == Tiny ? 1e-4 : 1e-3;

    public Fixture(string name)
    {
        Name = name;
        CheckpointDir = Path.Combine(Root, name, "checkpoint");
        _ref = SafetensorsFile.Open(Path.Combine(Root, name, "reference.safetensors"));
        PromptCount = _ref.Entries.Keys.Count(k => k.StartsWith("prompt."));
    }

    public Tensor Ref(string name) => _ref.Read(name);

    public long[] Ids(string name)
    {
        using var t = Ref(name);
        return t.data<long>().ToArray();
    }

    public void Dispose() => _ref.Dispose();
}
