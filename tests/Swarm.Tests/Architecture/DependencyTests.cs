using System.Reflection;
using System.Text.Json;
using Xunit;

namespace Swarm.Tests.Architecture;

/// <summary>
/// The assemblies are split by dependency: the coordinator and everything it stands on are torch-free,
/// and only hosts reference the Generic Host. These tests read the real reference closure and the
/// coordinator program's dependency manifest, so a stray reference fails the build's tests.
/// </summary>
public sealed class DependencyTests
{
    private static readonly string[] TorchFree = ["Swarm.Protocol", "Swarm.Transport", "Swarm.ModelInfo", "Swarm.Weights", "Swarm.Hosting", "Swarm.Coordinator", "swarm-coordinator"];
    private static readonly string[] NotHosting = ["Swarm.Protocol", "Swarm.Transport", "Swarm.ModelInfo", "Swarm.Weights", "Swarm.Inference"];

    /// <summary>Names of every assembly <paramref name="root"/> references, transitively (framework assemblies included).</summary>
    private static HashSet<string> Closure(string root)
    {
        var seen = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        var queue = new Queue<AssemblyName>([new AssemblyName(root)]);
        while (queue.Count > 0)
        {
            var name = queue.Dequeue();
            if (!seen.Add(name.Name!)) continue;
            Assembly a;
            try { a = Assembly.Load(name); }
            catch (FileNotFoundException) { continue; } // a facade the runtime resolves elsewhere
            foreach (var r in a.GetReferencedAssemblies()) queue.Enqueue(r);
        }
        return seen;
    }

    [Theory]
    [MemberData(nameof(TorchFreeAssemblies))]
    public void TorchFreeAssembly_ReferencesNoTorchSharp(string assembly)
    {
        var closure = Closure(assembly);
        Assert.Contains(assembly, closure);
        Assert.DoesNotContain(closure, n => n.StartsWith("TorchSharp", StringComparison.OrdinalIgnoreCase));
        Assert.DoesNotContain("Swarm.Inference", closure);
    }

    public static TheoryData<string> TorchFreeAssemblies() => new(TorchFree);

    [Theory]
    [MemberData(nameof(NonHostingAssemblies))]
    public void Library_DoesNotReferenceTheGenericHost(string assembly)
    {
        var closure = Closure(assembly);
        Assert.DoesNotContain(closure, n => n.StartsWith("Microsoft.Extensions.Hosting", StringComparison.OrdinalIgnoreCase));
    }

    public static TheoryData<string> NonHostingAssemblies() => new(NotHosting);

    [Fact]
    public void CoordinatorProgram_DependencyManifest_HasNoTorchOrLibtorch()
    {
        string deps = Path.Combine(AppContext.BaseDirectory, "swarm-coordinator.deps.json");
        Assert.True(File.Exists(deps), $"missing {deps}");
        using var doc = JsonDocument.Parse(File.ReadAllText(deps));
        var libraries = doc.RootElement.GetProperty("libraries").EnumerateObject().Select(p => p.Name).ToList();
        Assert.Contains(libraries, l => l.StartsWith("Swarm.Coordinator/", StringComparison.Ordinal));
        Assert.DoesNotContain(libraries, l => l.Contains("torch", StringComparison.OrdinalIgnoreCase));
    }

    [Fact]
    public void EngineSide_DoesCarryTorch_SoTheChecksCanSeeIt()
    {
        // The counterpart of the test above: the same manifest check does see libtorch where it belongs.
        string deps = Path.Combine(AppContext.BaseDirectory, "swarm.deps.json");
        using var doc = JsonDocument.Parse(File.ReadAllText(deps));
        var libraries = doc.RootElement.GetProperty("libraries").EnumerateObject().Select(p => p.Name).ToList();
        Assert.Contains(libraries, l => l.StartsWith("libtorch-cpu", StringComparison.OrdinalIgnoreCase));
        Assert.Contains(Closure("Swarm.Inference"), n => n.StartsWith("TorchSharp", StringComparison.OrdinalIgnoreCase));
    }
}

/// <summary>The coordinator of a real local swarm is the torch-free program: libtorch is never mapped into it.</summary>
[Collection("processes")]
public sealed class TorchFreeCoordinatorProcessTests(Xunit.Abstractions.ITestOutputHelper output)
{
    [Fact]
    public async Task LocalSwarm_CoordinatorProcess_ServesJobs_WithoutLoadingLibtorch()
    {
        using var fx = new Swarm.Tests.Model.Fixture(Swarm.Tests.Model.Fixture.Tiny);
        await using var swarm = await Swarm.Cli.LocalSwarm.StartAsync(new Swarm.Cli.LocalSwarmOptions
        {
            Model = fx.CheckpointDir, Nodes = 1, ThreadsPerNode = 1,
        }, output.WriteLine);
        var expected = fx.Ids("greedy.0");
        var got = Swarm.Tests.Integration.SwarmIntegrationTests.Tokens(
            await Swarm.Tests.Integration.SwarmIntegrationTests.CompleteAsync(swarm.HttpUrl, fx.Ids("prompt.0"), expected.Length));
        Assert.Equal(expected, got);

        int pid = swarm.CoordinatorProcessId;
        string maps = await File.ReadAllTextAsync($"/proc/{pid}/maps");
        Assert.Contains("Swarm.Coordinator.dll", maps);
        Assert.DoesNotContain("libtorch", maps);
        Assert.DoesNotContain("TorchSharp", maps);
        // …while a node process of the same swarm does map it (the check above can see libtorch).
        string nodeMaps = await File.ReadAllTextAsync($"/proc/{swarm.NodeProcesses[0]!.Id}/maps");
        Assert.Contains("libtorch", nodeMaps);
    }
}
