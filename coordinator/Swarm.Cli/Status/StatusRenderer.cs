using System.Globalization;
using System.Text;
using Spectre.Console;
using Spectre.Console.Rendering;
using Swarm.Coordinator.Api;
using Swarm.Coordinator.Membership;

namespace Swarm.Cli.Status;

/// <summary>
/// Turns a <see cref="SwarmStatus"/> into the terminal view of <c>swarm status</c>: a header, a per-layer
/// coverage strip with one bar per node, the node table and the recent jobs.
/// </summary>
internal static class StatusRenderer
{
    /// <summary>Width used when the output is not a terminal (files, pipes, tests).</summary>
    public const int DefaultWidth = 120;

    private const int LabelWidth = 14;

    /// <summary>Below this width the tables drop their less important columns.</summary>
    public const int CompactBelow = 118;

    /// <summary>
    /// The whole view for a console <paramref name="width"/> columns wide (narrow consoles get compact tables and
    /// narrower coverage cells); at most <paramref name="maxRecentJobs"/> recent jobs when given.
    /// </summary>
    public static IRenderable Render(SwarmStatus status, int width = DefaultWidth, int? maxRecentJobs = null)
    {
        ArgumentNullException.ThrowIfNull(status);
        bool compact = width < CompactBelow;
        return new Rows(
            Header(status),
            Coverage(status, width),
            Text.Empty,
            Nodes(status, compact),
            Text.Empty,
            Jobs(status, compact, maxRecentJobs));
    }

    /// <summary>The view as plain text (no colours or escape codes), <paramref name="width"/> columns wide.</summary>
    public static string RenderToText(SwarmStatus status, int width = DefaultWidth)
    {
        var writer = new StringWriter(CultureInfo.InvariantCulture);
        var console = CreateConsole(writer, ansi: false, width);
        console.Write(Render(status, width));
        return writer.ToString();
    }

    /// <summary>
    /// A console writing to <paramref name="writer"/>: with colours and terminal width when <paramref name="ansi"/>,
    /// otherwise plain text <paramref name="width"/> columns wide.
    /// </summary>
    public static IAnsiConsole CreateConsole(TextWriter writer, bool ansi, int width = DefaultWidth)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer),
            Ansi = ansi ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = ansi ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = ansi ? InteractionSupport.Detect : InteractionSupport.No,
        });
        if (!ansi)
        {
            console.Profile.Width = width;
            console.Profile.Capabilities.Unicode = true;
        }
        return console;
    }

    private static Markup Header(SwarmStatus s)
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"[bold]Swarm[/] · [bold]{Markup.Escape(s.Model)}[/] · {s.NumLayers} layers · wire {Markup.Escape(s.WireDtype)}");
        sb.Append(CultureInfo.InvariantCulture, $" · up {Duration(s.UptimeS)} · recoveries {s.Recoveries}");
        sb.AppendLine();
        sb.Append(s.Covered
            ? $"[green]coverage: complete[/] (every layer served, ≥ {(s.Coverage.Count == 0 ? 0 : s.Coverage.Min())} replica(s))"
            : $"[bold red]coverage: INCOMPLETE[/] — [red]{Markup.Escape(s.Uncovered ?? SwarmStatus.DescribeUncovered(s.Coverage) ?? "some layers")} not served by any node[/]");
        return new Markup(sb.ToString());
    }

    /// <summary>
    /// The coverage strip: one cell per layer showing its replica count (red when zero), and under it one bar per
    /// node across the layers it holds, then the range in <c>A:B</c> notation and the state.
    /// </summary>
    private static Markup Coverage(SwarmStatus s, int width)
    {
        int layers = Math.Max(1, s.NumLayers);
        // Three columns per layer when they fit beside the label and the "  A:B state" suffix (36 layers, pythia-12b,
        // fit in 120 columns); otherwise two, or one.
        const int suffix = 20;
        int cell = LabelWidth + layers * 3 + suffix <= width ? 3 : LabelWidth + layers * 2 + suffix <= width ? 2 : 1;
        int labelStep = cell == 3 ? 1 : cell == 2 ? 2 : 10;
        var sb = new StringBuilder();

        sb.Append(Label("layer"));
        for (int l = 0; l < layers; l++)
            sb.Append(l % labelStep == 0 ? l.ToString(CultureInfo.InvariantCulture).PadLeft(cell)[..cell] : new string(' ', cell));
        sb.AppendLine();

        sb.Append(Label("replicas"));
        for (int l = 0; l < layers; l++)
        {
            int r = l < s.Coverage.Count ? s.Coverage[l] : 0;
            string text = (cell == 1 ? (r > 9 ? "+" : r.ToString(CultureInfo.InvariantCulture)) : Math.Min(r, 99).ToString(CultureInfo.InvariantCulture)).PadLeft(cell);
            string style = r switch { <= 0 => "bold white on red", 1 => "black on darkolivegreen3", 2 => "black on green3", _ => "white on green4" };
            sb.Append(CultureInfo.InvariantCulture, $"[{style}]{text}[/]");
        }
        sb.AppendLine();

        foreach (var n in s.Nodes.OrderBy(n => n.Range?.Start ?? int.MaxValue).ThenBy(n => n.Range?.End ?? 0).ThenBy(n => n.Name, StringComparer.Ordinal))
        {
            sb.Append(Label(n.Name));
            if (n.Range is { } r)
            {
                int start = Math.Min(r.Start, layers), end = Math.Min(r.End, layers);
                char glyph = n.State == NodeState.Serving ? '█' : n.State is NodeState.Dead or NodeState.Left ? '·' : '▒';
                sb.Append(new string(' ', start * cell));
                sb.Append(CultureInfo.InvariantCulture, $"[{StateColor(n.State)}]{new string(glyph, (end - start) * cell)}[/]");
                sb.Append(new string(' ', (layers - end) * cell));
                sb.Append(CultureInfo.InvariantCulture, $"  {r} [{StateColor(n.State)}]{StateName(n.State)}[/]");
            }
            else
            {
                sb.Append(CultureInfo.InvariantCulture, $"[dim]no layers[/] [{StateColor(n.State)}]{StateName(n.State)}[/]");
            }
            sb.AppendLine();
        }
        return new Markup(sb.ToString().TrimEnd('\n', '\r'));
    }

    private static IRenderable Nodes(SwarmStatus s, bool compact)
    {
        int serving = s.Nodes.Count(n => n.State == NodeState.Serving);
        if (s.Nodes.Count == 0)
            return new Markup("[bold]Nodes[/]: none has joined yet (start one with [italic]swarm node --coordinator HOST:PORT --model DIR[/])\n");
        var table = NewTable(compact, $"[bold]Nodes[/] ({serving}/{s.Nodes.Count} serving)")
            .AddColumn(Col("Name", compact)).AddColumn(Col("Address", compact)).AddColumn(Col("Layers", compact))
            .AddColumn(Col("Device", compact)).AddColumn(Col("State", compact))
            .AddColumn(Col("Load", compact, right: true)).AddColumn(Col(compact ? "Tok/s" : "Tokens/s", compact, right: true));
        if (!compact) table.AddColumn(Col("KV cache", compact, right: true)).AddColumn(Col("Sessions", compact, right: true));
        table.AddColumn(Col(compact ? "Beat" : "Last beat", compact, right: true));
        foreach (var n in s.Nodes)
        {
            double kv = n.KvTokensCapacity > 0 ? (double)n.KvTokensUsed / n.KvTokensCapacity : 0;
            string kvColor = kv >= 0.95 ? "red" : kv >= 0.75 ? "yellow" : "default";
            string beatColor = n.LastHeartbeatMsAgo > 5000 ? "red" : n.LastHeartbeatMsAgo > 1500 ? "yellow" : "default";
            var cells = new List<IRenderable>
            {
                new Markup($"[bold]{Markup.Escape(n.Name)}[/]"),
                new Text(n.Address),
                new Text(n.RangeText),
                new Text(n.Threads > 0 ? $"{n.Device} ×{n.Threads}" : n.Device),
                new Markup($"[{StateColor(n.State)}]{StateName(n.State)}[/]"),
                new Text(n.InFlight.ToString(CultureInfo.InvariantCulture)),
                new Text(n.TokensPerS.ToString("F1", CultureInfo.InvariantCulture)),
            };
            if (!compact)
            {
                cells.Add(new Markup(string.Create(CultureInfo.InvariantCulture, $"[{kvColor}]{Count(n.KvTokensUsed)}/{Count(n.KvTokensCapacity)} {kv * 100:F0}%[/]")));
                cells.Add(new Text(n.Sessions.ToString(CultureInfo.InvariantCulture)));
            }
            cells.Add(new Markup($"[{beatColor}]{Ago(n.LastHeartbeatMsAgo)}[/]"));
            table.AddRow(cells);
        }
        return table;
    }

    private static IRenderable Jobs(SwarmStatus s, bool compact, int? maxRecent)
    {
        var j = s.Jobs;
        var counters = new Markup(string.Create(CultureInfo.InvariantCulture,
            $"[bold]Jobs[/]: {j.Queued} queued · {j.Running} running · {j.Completed} completed · {(j.Failed > 0 ? "[red]" : "[default]")}{j.Failed} failed[/]"));
        if (j.Recent.Count == 0) return new Rows(counters, new Markup("[dim]no recent jobs[/]"));
        var table = NewTable(compact, "[bold]Recent jobs[/]").AddColumn(Col("Job", compact)).AddColumn(Col("State", compact));
        if (!compact) table.AddColumn(Col("Prompt", compact, right: true));
        table.AddColumn(Col(compact ? "Gen" : "Generated", compact, right: true)).AddColumn(Col("TTFT", compact, right: true))
            .AddColumn(Col(compact ? "Tok/s" : "Tokens/s", compact, right: true));
        if (!compact) table.AddColumn(Col("Recoveries", compact, right: true));
        table.AddColumn(Col("Finished", compact, right: true)).AddColumn(new TableColumn("Error"));
        foreach (var x in maxRecent is int max ? j.Recent.Take(max) : j.Recent)
        {
            var cells = new List<IRenderable> { new Text(x.Id), new Markup($"[{JobColor(x.State)}]{JobName(x.State)}[/]") };
            if (!compact) cells.Add(new Text(x.PromptTokens.ToString(CultureInfo.InvariantCulture)));
            cells.Add(new Text(x.CompletionTokens.ToString(CultureInfo.InvariantCulture)));
            cells.Add(new Text(x.TtftMs is double t ? t.ToString("F1", CultureInfo.InvariantCulture) + " ms" : "–"));
            cells.Add(new Text(x.TokensPerS is double r ? r.ToString("F1", CultureInfo.InvariantCulture) : "–"));
            if (!compact) cells.Add(new Text(x.Recoveries.ToString(CultureInfo.InvariantCulture)));
            cells.Add(new Text(x.FinishedAgoS is double f ? Duration(f) + " ago" : "–"));
            cells.Add(new Markup(x.Error is null ? "" : $"[red]{Markup.Escape(x.Error)}[/]"));
            table.AddRow(cells);
        }
        return new Rows(counters, table);
    }

    /// <summary>Rounded borders when there is room; compact tables have none, to leave the width to the data.</summary>
    private static Table NewTable(bool compact, string title)
    {
        var t = new Table().Title(title);
        return compact ? t.Border(TableBorder.None) : t.Border(TableBorder.Rounded);
    }

    /// <summary>A column that never wraps (addresses and ranges must stay on one line; only the error text may wrap).</summary>
    private static TableColumn Col(string header, bool compact, bool right = false)
    {
        var c = new TableColumn($"[bold]{header}[/]").NoWrap();
        if (compact) c.Padding(0, 0, 2, 0);
        return right ? c.RightAligned() : c;
    }

    /// <summary>The state as the JSON spells it (<c>serving</c>, <c>suspect</c>, …).</summary>
    public static string StateName(NodeState state) => JsonNamingPolicyLower(state.ToString());

    private static string JobName(SwarmJobState state) => JsonNamingPolicyLower(state.ToString());

    private static string JsonNamingPolicyLower(string name) => System.Text.Json.JsonNamingPolicy.SnakeCaseLower.ConvertName(name);

    private static string StateColor(NodeState state) => state switch
    {
        NodeState.Serving => "green",
        NodeState.Joining or NodeState.Loading => "deepskyblue1",
        NodeState.Draining or NodeState.Suspect => "yellow",
        NodeState.Dead => "red",
        _ => "grey",
    };

    private static string JobColor(SwarmJobState state) => state switch
    {
        SwarmJobState.Done => "green",
        SwarmJobState.Running => "deepskyblue1",
        SwarmJobState.Failed => "red",
        _ => "grey",
    };

    private static string Label(string name)
    {
        string text = name.Length > LabelWidth - 1 ? name[..(LabelWidth - 2)] + "…" : name;
        return Markup.Escape(text.PadRight(LabelWidth));
    }

    /// <summary>"8.2k", "1.5M" for large counts, the number itself below 10 000.</summary>
    public static string Count(long v) => Math.Abs(v) switch
    {
        >= 1_000_000 => (v / 1e6).ToString("F1", CultureInfo.InvariantCulture) + "M",
        >= 10_000 => (v / 1e3).ToString("F1", CultureInfo.InvariantCulture) + "k",
        _ => v.ToString(CultureInfo.InvariantCulture),
    };

    /// <summary>"8.0 s", "12 s", "3m 05s", "1h 02m", "2d 3h 04m".</summary>
    public static string Duration(double seconds)
    {
        if (double.IsNaN(seconds) || seconds < 0) return "–";
        if (seconds < 60) return seconds.ToString(seconds < 10 ? "F1" : "F0", CultureInfo.InvariantCulture) + " s";
        var t = TimeSpan.FromSeconds(Math.Floor(seconds));
        return t.Days > 0 ? string.Create(CultureInfo.InvariantCulture, $"{t.Days}d {t.Hours}h {t.Minutes:00}m")
            : t.Hours > 0 ? string.Create(CultureInfo.InvariantCulture, $"{t.Hours}h {t.Minutes:00}m")
            : string.Create(CultureInfo.InvariantCulture, $"{t.Minutes}m {t.Seconds:00}s");
    }

    private static string Ago(long ms) => ms < 1000 ? string.Create(CultureInfo.InvariantCulture, $"{ms} ms") : Duration(ms / 1000.0);
}
