using System.Globalization;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Swarm.Coordinator.Status;

/// <summary>
/// The <c>--watch</c> loop: fetch, show, wait, until cancelled (Ctrl-C). A failed fetch does not end it: the view
/// says the coordinator is unreachable and keeps the last status, and the next tick tries again.
/// </summary>
internal static class StatusWatcher
{
    /// <summary>
    /// Refreshes the view every <paramref name="interval"/>. With <paramref name="live"/> the view is redrawn in place
    /// (Spectre live display); otherwise each refresh is appended, separated by a timestamped rule.
    /// </summary>
    /// <returns>0 once cancelled.</returns>
    public static async Task<int> WatchAsync(StatusClient client, IAnsiConsole console, bool live, TimeSpan interval, CancellationToken cancellationToken)
    {
        string footer = string.Create(CultureInfo.InvariantCulture,
            $"{client.Endpoint} every {interval.TotalSeconds:0.#} s · Ctrl-C stops");
        Rows? last = null;

        async Task<IRenderable> NextFrameAsync()
        {
            try
            {
                var fetched = await client.FetchAsync(cancellationToken).ConfigureAwait(false);
                // In place, the view must fit the terminal: keep the newest few jobs only.
                var view = StatusRenderer.Render(fetched.Status, console.Profile.Width, maxRecentJobs: live ? 5 : null);
                var frame = new Rows(view, new Markup($"[dim]updated {DateTime.Now:HH:mm:ss} from {Markup.Escape(footer)}[/]"));
                last = frame;
                return frame;
            }
            catch (StatusFetchException e)
            {
                var banner = new Markup($"[bold white on red] disconnected [/] [red]{Markup.Escape(e.Message)}[/] [dim](retrying; last status below)[/]");
                return last is null ? new Rows(banner, new Markup($"[dim]{Markup.Escape(footer)}[/]")) : new Rows(banner, last);
            }
        }

        try
        {
            if (live)
            {
                await console.Live(new Markup("[dim]connecting…[/]")).AutoClear(false).Overflow(VerticalOverflow.Ellipsis)
                    .StartAsync(async ctx =>
                    {
                        while (true)
                        {
                            ctx.UpdateTarget(await NextFrameAsync().ConfigureAwait(false));
                            ctx.Refresh();
                            await Task.Delay(interval, cancellationToken).ConfigureAwait(false);
                        }
                    }).ConfigureAwait(false);
            }
            else
            {
                while (true)
                {
                    var frame = await NextFrameAsync().ConfigureAwait(false);
                    console.Write(new Rule(DateTime.Now.ToString("HH:mm:ss", CultureInfo.InvariantCulture)) { Justification = Justify.Left });
                    console.Write(frame);
                    console.WriteLine();
                    await Task.Delay(interval, cancellationToken).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
        return 0;
    }

    /// <summary>
    /// Prints the raw JSON of each fetch on its own line (JSON Lines) every <paramref name="interval"/>. A failed fetch
    /// writes one line to <paramref name="error"/> (never to <paramref name="output"/>, which parsers read) and is retried.
    /// </summary>
    /// <returns>0 once cancelled.</returns>
    public static async Task<int> WatchJsonAsync(StatusClient client, TextWriter output, TextWriter error, TimeSpan interval, CancellationToken cancellationToken)
    {
        try
        {
            while (true)
            {
                try
                {
                    var fetched = await client.FetchAsync(cancellationToken).ConfigureAwait(false);
                    // One document per line even if the coordinator ever pretty-prints.
                    await output.WriteLineAsync(fetched.Json.ReplaceLineEndings("")).ConfigureAwait(false);
                    await output.FlushAsync(cancellationToken).ConfigureAwait(false);
                }
                catch (StatusFetchException e)
                {
                    await error.WriteLineAsync($"swarm status: {e.Message} (retrying)").ConfigureAwait(false);
                }
                await Task.Delay(interval, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return 0;
        }
    }
}
