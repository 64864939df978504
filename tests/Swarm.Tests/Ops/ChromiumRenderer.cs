using System.ComponentModel;
using System.Diagnostics;
using System.Text;

namespace Swarm.Tests.Ops;

/// <summary>
/// Renders a page in headless Chromium (Debian's <c>chromium</c> package) and returns the DOM after the page's
/// scripts ran, or saves a screenshot. Usable against any URL: a test host or a real running swarm.
/// </summary>
/// <remarks>
/// The browser is found through <c>SWARM_CHROMIUM</c> or on PATH (<c>chromium</c>, <c>chromium-browser</c>,
/// <c>google-chrome</c>, <c>google-chrome-stable</c>). Each run gets a fresh profile directory, deleted afterwards,
/// and is killed (with its helper processes) when it overruns its timeout.
/// </remarks>
public static class ChromiumRenderer
{
    private static readonly string[] s_names = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"];

    /// <summary>The browser to run.</summary>
    /// <exception cref="InvalidOperationException">No Chromium found; the message says how to install it.</exception>
    public static string FindExecutable()
    {
        string? configured = Environment.GetEnvironmentVariable("SWARM_CHROMIUM");
        if (!string.IsNullOrWhiteSpace(configured))
        {
            return File.Exists(configured) ? configured
                : throw new InvalidOperationException($"SWARM_CHROMIUM is set to '{configured}', which does not exist.");
        }
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
            foreach (string name in s_names)
            {
                string candidate = Path.Combine(dir, name);
                if (File.Exists(candidate)) return candidate;
            }
        throw new InvalidOperationException(
            $"Chromium is required by the dashboard tests but none of {string.Join(", ", s_names)} is on PATH. " +
            "Install it with `sudo apt-get install -y chromium` (Debian/Ubuntu), or set SWARM_CHROMIUM to the browser's executable.");
    }

    /// <summary>
    /// Loads <paramref name="url"/>, lets its scripts run for <paramref name="virtualTimeBudgetMs"/> of virtual time
    /// (timers fire, fetches complete) and returns the serialized DOM.
    /// </summary>
    public static async Task<string> DumpDomAsync(string url, int virtualTimeBudgetMs = 5000, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        var run = await RunAsync(url, virtualTimeBudgetMs, ["--dump-dom"], timeout, cancellationToken).ConfigureAwait(false);
        if (!run.Stdout.Contains("<html", StringComparison.OrdinalIgnoreCase))
            throw new InvalidOperationException($"Chromium printed no DOM for {url} (exit code {run.ExitCode}). stderr:\n{run.StderrTail}");
        return run.Stdout;
    }

    /// <summary>
    /// Loads <paramref name="url"/> in a <paramref name="width"/>×<paramref name="height"/> window, lets its scripts run
    /// for <paramref name="virtualTimeBudgetMs"/> of virtual time and writes a PNG to <paramref name="pngPath"/>.
    /// </summary>
    /// <returns>The full path of the PNG.</returns>
    public static async Task<string> ScreenshotAsync(string url, string pngPath, int width = 1280, int height = 900,
        int virtualTimeBudgetMs = 5000, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        string path = Path.GetFullPath(pngPath);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.Delete(path);
        var run = await RunAsync(url, virtualTimeBudgetMs, [$"--screenshot={path}", $"--window-size={width},{height}", "--hide-scrollbars"],
            timeout, cancellationToken).ConfigureAwait(false);
        if (!File.Exists(path) || new FileInfo(path).Length == 0)
            throw new InvalidOperationException($"Chromium wrote no screenshot of {url} to {path} (exit code {run.ExitCode}). stderr:\n{run.StderrTail}");
        return path;
    }

    private sealed record Run(int ExitCode, string Stdout, string StderrTail);

    private static async Task<Run> RunAsync(string url, int virtualTimeBudgetMs, IEnumerable<string> modeArgs, TimeSpan? timeout, CancellationToken cancellationToken)
    {
        string exe = FindExecutable();
        string profile = Path.Combine(Path.GetTempPath(), "swarm-chromium-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(profile);
        var psi = new ProcessStartInfo(exe)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8,
        };
        foreach (string a in new[]
        {
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--no-default-browser-check",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
            "--disable-dev-shm-usage", "--mute-audio", "--user-data-dir=" + profile, "--virtual-time-budget=" + virtualTimeBudgetMs,
        }) psi.ArgumentList.Add(a);
        foreach (string a in modeArgs) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add(url);

        using var process = new Process { StartInfo = psi };
        try
        {
            try { process.Start(); }
            catch (Win32Exception e) { throw new InvalidOperationException($"could not start Chromium at {exe}: {e.Message}", e); }
            process.StandardInput.Close();
            var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
            var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var limit = timeout ?? TimeSpan.FromSeconds(90);
            cts.CancelAfter(limit);
            try
            {
                await process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                throw new TimeoutException($"Chromium did not finish rendering {url} within {limit.TotalSeconds:F0} s");
            }
            string err = await stderr.ConfigureAwait(false);
            return new Run(process.ExitCode, await stdout.ConfigureAwait(false), Tail(err, 40));
        }
        finally
        {
            try { if (!process.HasExited) process.Kill(entireProcessTree: true); }
            catch (InvalidOperationException) { /* never started or already gone */ }
            try { Directory.Delete(profile, recursive: true); }
            catch (IOException) { /* a straggling helper may still hold a file; the temp dir is cleaned eventually */ }
            catch (UnauthorizedAccessException) { }
        }
    }

    private static string Tail(string text, int lines)
    {
        var all = text.Split('\n');
        return string.Join('\n', all.Skip(Math.Max(0, all.Length - lines)));
    }
}
