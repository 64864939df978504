using System.Diagnostics;
using Xunit;

namespace Swarm.Tests.Telemetry;

/// <summary>Runs Prometheus' <c>promtool check metrics</c> on a scrape. Missing promtool is a failure, never a skip.</summary>
internal static class Promtool
{
    public static string? Find() =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, "promtool")).FirstOrDefault(File.Exists);

    /// <summary>Asserts that <paramref name="exposition"/> passes <c>promtool check metrics</c> (parse and lint).</summary>
    public static async Task AssertValidAsync(string exposition, string what)
    {
        string promtool = Find() ?? throw new Xunit.Sdk.XunitException(
            "promtool was not found on PATH: install Debian's 'prometheus' package (apt-get install prometheus), as .ci/run does, to check the /metrics exposition");
        var psi = new ProcessStartInfo(promtool) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("check");
        psi.ArgumentList.Add("metrics");
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        await p.StandardInput.WriteAsync(exposition);
        p.StandardInput.Close();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await p.WaitForExitAsync(cts.Token);
        string output = (await stdout + await stderr).Trim();
        Assert.True(p.ExitCode == 0, $"promtool check metrics rejected {what} (exit {p.ExitCode}):\n{output}\n--- exposition ---\n{exposition}");
    }
}
