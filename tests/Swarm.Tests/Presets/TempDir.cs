namespace Swarm.Tests.Presets;

/// <summary>A fresh temporary folder, deleted on dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("swarm-test-").FullName;
    public string Sub(string name) => System.IO.Path.Combine(Path, name);
    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

internal static class TensorAssert
{
    /// <summary>Same shape, dtype and every element equal.</summary>
    public static void Same(TorchSharp.torch.Tensor expected, TorchSharp.torch.Tensor actual)
    {
        Xunit.Assert.Equal(expected.shape, actual.shape);
        Xunit.Assert.Equal(expected.dtype, actual.dtype);
        using var eq = expected.equal(actual);
        using var all = eq.all();
        Xunit.Assert.True(all.item<bool>(), "tensors differ");
    }
}
