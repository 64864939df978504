using System.Diagnostics;
using Swarm.Cli;
using Swarm.Model;
using Swarm.Tests.Model;
using Swarm.Tests.Presets;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Weights;

/// <summary><c>swarm model manifest</c> and <c>swarm model pull</c> as real processes against a local hub-style server.</summary>
[Collection("processes")]
public sealed class ModelPullCommandTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _tmp = new();

    private async Task<(int ExitCode, string Stdout, string Stderr)> SwarmAsync(params string[] args)
    {
        var (exe, prefix) = LocalSwarm.SelfCommand();
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in prefix.Concat(args)) psi.ArgumentList.Add(a);
        psi.Environment["SWARM_CACHE"] = _tmp.Sub("cache");
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(3));
        output.WriteLine($"swarm {string.Join(' ', args)} → {p.ExitCode}\n{await stdout}{await stderr}");
        return (p.ExitCode, await stdout, await stderr);
    }

    [Fact]
    public async Task ManifestThenPull_WritesAVerifiedLoadableStage_AndA404ExitsWithTheUrl()
    {
        await using var server = await HubTestServer.StartAsync();
        using var fx = new Fixture(Fixture.Small);
        server.AddFolder("EleutherAI/pythia-test", "step143000", fx.CheckpointDir);
        string repo = server.RepoUrl("EleutherAI/pythia-test");

        var manifest = await SwarmAsync("model", "manifest", "--url", repo, "--revision", "step143000");
        Assert.Equal(0, manifest.ExitCode);
        server.ResetCounters();
        string outDir = _tmp.Sub("stage");
        var pull = await SwarmAsync("model", "pull", "--url", repo, "--revision", "step143000", "--layers", "4:6", "--out", outDir);
        Assert.Equal(0, pull.ExitCode);
        Assert.Contains("every tensor verified against the manifest", pull.Stdout);
        var all = WeightTestData.Tensors(fx.CheckpointDir);
        Assert.Equal(NeoXTensorNames.ForStage(ModelConfig.Load(fx.CheckpointDir), 4, 6).Sum(n => all[n].Length), server.DataBytesServed);
        WeightTestData.AssertSameStageOutput(fx.CheckpointDir, outDir, 4, 6);

        var missing = await SwarmAsync("model", "pull", "--url", server.RepoUrl("EleutherAI/nothing"), "--layers", "0:1", "--out", _tmp.Sub("none"));
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("HTTP 404", missing.Stderr);
        Assert.Contains("/EleutherAI/nothing/resolve/main/config.json", missing.Stderr);
        var usage = await SwarmAsync("model", "pull", "--url", repo, "--layers", "3", "--out", _tmp.Sub("none"));
        Assert.Equal(2, usage.ExitCode);
        Assert.Contains("--layers", usage.Stderr);
    }

    public void Dispose() => _tmp.Dispose();
}
