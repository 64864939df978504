using System.Diagnostics;
using System.Text;
using Swarm.Cli;
using Xunit;

namespace Swarm.Tests.Integration;

/// <summary>Which program a <see cref="CliProcess"/> runs.</summary>
public enum SwarmProgram
{
    /// <summary><c>swarm</c>, the CLI with every subcommand.</summary>
    Cli,

    /// <summary><c>swarm-coordinator</c>, the torch-free coordinator program.</summary>
    Coordinator,
}

/// <summary>
/// One of the swarm programs as a child process of a test: <c>RunAsync</c> runs it to its exit;
/// <c>Start</c> leaves it running (output captured) until the test disposes it (SIGTERM, then kill).
/// </summary>
internal sealed class CliProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();

    private CliProcess(Process process)
    {
        _process = process;
        _process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (_output) _output.AppendLine(e.Data); };
        _process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_output) _output.AppendLine(e.Data); };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    /// <summary>Everything the process wrote so far (stdout and stderr interleaved).</summary>
    public string Output
    {
        get { lock (_output) return _output.ToString(); }
    }

    /// <summary>True once the process ended.</summary>
    public bool HasExited => _process.HasExited;

    /// <summary>Runs <paramref name="program"/> with <paramref name="args"/> to its exit; fails the test after <paramref name="timeout"/>.</summary>
    public static Task<(int Exit, string Stdout, string Stderr)> RunAsync(SwarmProgram program, TimeSpan timeout, params string[] args) =>
        RunAsync(program, timeout, new Dictionary<string, string>(), args);

    /// <summary>As <see cref="RunAsync(SwarmProgram, TimeSpan, string[])"/>, with extra environment variables.</summary>
    public static async Task<(int Exit, string Stdout, string Stderr)> RunAsync(SwarmProgram program, TimeSpan timeout,
        IReadOnlyDictionary<string, string> environment, params string[] args)
    {
        using var p = Process.Start(StartInfo(program, args, environment))!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try { await p.WaitForExitAsync(cts.Token); }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"{program} {string.Join(' ', args)} did not exit within {timeout.TotalSeconds:0} s");
        }
        return (p.ExitCode, await stdout, await stderr);
    }

    /// <summary>Starts <paramref name="program"/> and leaves it running.</summary>
    public static CliProcess Start(SwarmProgram program, params string[] args) => Start(program, new Dictionary<string, string>(), args);

    /// <summary>Starts <paramref name="program"/> with extra environment variables and leaves it running.</summary>
    public static CliProcess Start(SwarmProgram program, IReadOnlyDictionary<string, string> environment, params string[] args) =>
        new(Process.Start(StartInfo(program, args, environment))!);

    /// <summary>Starts <paramref name="program"/> inside network namespace <paramref name="netns"/> (<c>ip netns exec</c>) and leaves it running.</summary>
    public static CliProcess StartIn(string netns, SwarmProgram program, IReadOnlyDictionary<string, string> environment, params string[] args) =>
        new(Process.Start(StartInfo(program, args, environment, netns))!);

    /// <summary>Runs <paramref name="program"/> inside network namespace <paramref name="netns"/> to its exit; fails the test after <paramref name="timeout"/>.</summary>
    public static async Task<(int Exit, string Stdout, string Stderr)> RunInAsync(string netns, SwarmProgram program, TimeSpan timeout, params string[] args)
    {
        using var p = Process.Start(StartInfo(program, args, new Dictionary<string, string>(), netns))!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try { await p.WaitForExitAsync(cts.Token); }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"{program} {string.Join(' ', args)} in {netns} did not exit within {timeout.TotalSeconds:0} s");
        }
        return (p.ExitCode, await stdout, await stderr);
    }

    /// <summary>Waits until the output contains <paramref name="text"/> <paramref name="times"/> times; fails the test if the process exits first or time runs out.</summary>
    public async Task WaitForOutputAsync(string text, TimeSpan timeout, int times = 1)
    {
        var sw = Stopwatch.StartNew();
        while (CountOf(text) < times)
        {
            Assert.False(_process.HasExited, $"the process exited with code {(_process.HasExited ? _process.ExitCode : 0)} before writing '{text}':\n{Output}");
            if (sw.Elapsed > timeout) Assert.Fail($"'{text}' did not appear {times} time(s) within {timeout.TotalSeconds:0} s:\n{Output}");
            await Task.Delay(100);
        }
    }

    private int CountOf(string text)
    {
        string output = Output;
        int count = 0;
        for (int at = output.IndexOf(text, StringComparison.Ordinal); at >= 0; at = output.IndexOf(text, at + text.Length, StringComparison.Ordinal)) count++;
        return count;
    }

    /// <summary>Waits until <c>GET {url}/healthz</c> answers; fails the test if the process exits first or time runs out.</summary>
    public async Task WaitHealthyAsync(string url, TimeSpan timeout)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < timeout)
        {
            Assert.False(_process.HasExited, $"the process exited with code {(_process.HasExited ? _process.ExitCode : 0)}:\n{Output}");
            try
            {
                if ((await http.GetAsync(url + "/healthz")).IsSuccessStatusCode) return;
            }
            catch (HttpRequestException) { }
            catch (TaskCanceledException) { }
            await Task.Delay(100);
        }
        Assert.Fail($"{url}/healthz did not answer within {timeout.TotalSeconds:0} s:\n{Output}");
    }

    private static ProcessStartInfo StartInfo(SwarmProgram program, string[] args, IReadOnlyDictionary<string, string> environment, string? netns = null)
    {
        var (exe, prefix) = program == SwarmProgram.Cli ? LocalSwarm.SelfCommand() : LocalSwarm.CoordinatorCommandLine();
        // ip netns exec execs the program itself, so the process (and its pid, for SIGTERM) is the program's.
        if (netns is not null) (exe, prefix) = ("ip", ["netns", "exec", netns, exe, .. prefix]);
        var psi = new ProcessStartInfo(exe) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in prefix.Concat(args)) psi.ArgumentList.Add(a);
        psi.Environment["OMP_WAIT_POLICY"] = "PASSIVE";
        foreach (var (key, value) in environment) psi.Environment[key] = value;
        return psi;
    }

    /// <summary>Kills the process at once (SIGKILL: no leave, no goodbye — a machine that vanished).</summary>
    public void Kill()
    {
        if (!_process.HasExited) _process.Kill(entireProcessTree: true);
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            LocalSwarm.Terminate(_process);
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            try { await _process.WaitForExitAsync(cts.Token); }
            catch (OperationCanceledException) { _process.Kill(entireProcessTree: true); }
        }
        _process.Dispose();
    }
}
