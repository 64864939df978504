using System.CommandLine;
using System.Globalization;
using Swarm.Coordinator.Security;

using Swarm.Hosting;

namespace Swarm.Coordinator.Status;

/// <summary>
/// <c>swarm status [--url URL] [--api-key KEY] [--cacert FILE] [--json] [--watch] [--interval S]</c>: the swarm as the coordinator sees it, from
/// <c>GET /api/swarm</c>. Exit codes: 0 shown, 1 coordinator unreachable or answering nonsense, 2 bad arguments.
/// </summary>
public static class StatusCommand
{
    /// <summary>Default of <c>--url</c>: the coordinator's default HTTP address.</summary>
    public const string DefaultUrl = "http://127.0.0.1:8080";

    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var url = new Option<string>("--url") { Description = "Coordinator HTTP address", DefaultValueFactory = _ => DefaultUrl };
        var json = new Option<bool>("--json") { Description = "Print the raw /api/swarm JSON (with --watch: one JSON document per line)" };
        var watch = new Option<bool>("--watch", "-w") { Description = "Refresh in place until Ctrl-C" };
        var interval = new Option<double>("--interval") { Description = "Seconds between refreshes with --watch", DefaultValueFactory = _ => 1.0 };
        var timeout = new Option<double>("--timeout") { Description = "Seconds to wait for the coordinator's answer", DefaultValueFactory = _ => 5.0 };
        var client = new CoordinatorClientFlags();
        var cmd = new Command("status", "Show the swarm: nodes, layer coverage, jobs (from the coordinator's /api/swarm)");
        cmd.Options.Add(url); cmd.Options.Add(json); cmd.Options.Add(watch); cmd.Options.Add(interval); cmd.Options.Add(timeout);
        client.AddTo(cmd);
        cmd.SetAction(async (r, ct) =>
        {
            var output = r.InvocationConfiguration.Output;
            var error = r.InvocationConfiguration.Error;
            StatusClient status;
            try
            {
                var endpoint = StatusClient.ResolveEndpoint(r.GetValue(url)!);
                if (!(r.GetValue(interval) >= 0.1)) throw new UsageException($"--interval: must be at least 0.1 s, got {r.GetValue(interval).ToString(CultureInfo.InvariantCulture)}");
                if (!(r.GetValue(timeout) > 0)) throw new UsageException($"--timeout: must be positive, got {r.GetValue(timeout).ToString(CultureInfo.InvariantCulture)}");
                status = new StatusClient(endpoint, TimeSpan.FromSeconds(r.GetValue(timeout)), client.Read(r));
            }
            catch (UsageException e)
            {
                await error.WriteLineAsync($"swarm status: {e.Message}").ConfigureAwait(false);
                return 2;
            }

            using var fetcher = status;
            // Colours and the live view only on a real terminal; anything else (pipes, files, tests) gets plain text.
            bool terminal = ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected;
            var console = StatusRenderer.CreateConsole(output, ansi: terminal);

            if (r.GetValue(watch))
            {
                var every = TimeSpan.FromSeconds(r.GetValue(interval));
                return r.GetValue(json)
                    ? await StatusWatcher.WatchJsonAsync(fetcher, output, error, every, ct).ConfigureAwait(false)
                    : await StatusWatcher.WatchAsync(fetcher, console, live: terminal, every, ct).ConfigureAwait(false);
            }

            try
            {
                var fetched = await fetcher.FetchAsync(ct).ConfigureAwait(false);
                if (r.GetValue(json)) await output.WriteLineAsync(fetched.Json).ConfigureAwait(false);
                else console.Write(StatusRenderer.Render(fetched.Status, console.Profile.Width));
                await output.FlushAsync(ct).ConfigureAwait(false);
                return 0;
            }
            catch (StatusFetchException e)
            {
                await error.WriteLineAsync($"swarm status: {e.Message}").ConfigureAwait(false);
                return 1;
            }
        });
        return cmd;
    }
}
