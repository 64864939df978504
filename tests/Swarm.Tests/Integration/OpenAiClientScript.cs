using System.Diagnostics;
using System.Text.Json.Nodes;
using Swarm.Tests.Ops;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Integration;

/// <summary>
/// Runs <c>tests/openai-client/check.mjs</c> — the official <c>openai</c> npm package at the version pinned in its
/// <c>package.json</c>, installed by <c>.ci/run</c> — against a live swarm. A missing <c>node</c> or package is a
/// failure that says how to install it, never a skip.
/// </summary>
internal static class OpenAiClientScript
{
    private static string Folder => Path.Combine(TestArtifacts.RepoRoot(), "tests", "openai-client");

    /// <summary>Runs the script against <paramref name="url"/> and returns its checks by name.</summary>
    public static Task<IReadOnlyDictionary<string, JsonNode>> RunAsync(string url, string model, ITestOutputHelper output) =>
        RunAsync("check.mjs", [url, model], new Dictionary<string, string>(), output);

    /// <summary>Runs <paramref name="script"/> of the folder with <paramref name="args"/> and extra environment variables; returns its checks by name.</summary>
    public static async Task<IReadOnlyDictionary<string, JsonNode>> RunAsync(string script, IReadOnlyList<string> args,
        IReadOnlyDictionary<string, string> environment, ITestOutputHelper output)
    {
        string node = Find("node") ?? throw new Xunit.Sdk.XunitException(
            "node was not found on PATH: install Node.js and npm (apt-get install nodejs npm) and run `npm ci --prefix tests/openai-client`, as .ci/run does");
        string pinned = (string)JsonNode.Parse(File.ReadAllText(Path.Combine(Folder, "package.json")))!["dependencies"]!["openai"]!;
        string installedManifest = Path.Combine(Folder, "node_modules", "openai", "package.json");
        string? installed = File.Exists(installedManifest) ? (string?)JsonNode.Parse(File.ReadAllText(installedManifest))!["version"] : null;
        if (installed != pinned)
            throw new Xunit.Sdk.XunitException(
                $"the openai npm package {pinned} is not installed in {Folder} (found: {installed ?? "none"}): run `npm ci --prefix tests/openai-client`, as .ci/run does");

        var psi = new ProcessStartInfo(node) { WorkingDirectory = Folder, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(script);
        foreach (string a in args) psi.ArgumentList.Add(a);
        foreach (var (key, value) in environment) psi.Environment[key] = value;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        try { await p.WaitForExitAsync(cts.Token); }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            throw new Xunit.Sdk.XunitException($"node {script} did not finish within 3 minutes; it printed:\n{await stdout}\n{await stderr}");
        }
        string printed = await stdout, errors = await stderr;
        output.WriteLine($"node {script} (openai {installed}) → exit {p.ExitCode}\n{printed}{errors}");
        Assert.True(p.ExitCode == 0, $"node {script} exited with {p.ExitCode}:\n{printed}\n{errors}");
        var checks = new Dictionary<string, JsonNode>();
        foreach (string line in printed.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var json = JsonNode.Parse(line)!;
            checks[(string)json["check"]!] = json;
        }
        return checks;
    }

    private static string? Find(string tool) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, tool)).FirstOrDefault(File.Exists);
}
