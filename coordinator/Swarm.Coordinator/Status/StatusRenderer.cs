using System.Globalization;
using System.Text;
using Spectre.Console;
using Spectre.Console.Rendering;
using Swarm.Coordinator.Api;
using Swarm.Coordinator.Membership;

namespace Swarm.Coordinator.Status;

/// <summary>
/// Turns a <see cref="SwarmStatus"/> into the terminal view of <c>swarm status</c>: a header, a per-layer
/// coverage strip with one bar per node, the node table and the recent jobs.
/// </summary>
internal static class StatusRenderer
{
    /// <summary>Width used when the output is not a terminal (files, pipes, tests).</summary>
    public const int DefaultWidth = 120;

    private const int LabelWidth = 14;

    /// <summary>
    /// The whole view for a console <paramref name="width"/> columns wide (see <see cref="Layout"/>; narrow consoles also
    /// get narrower coverage cells); at most <paramref name="maxRecentJobs"/> recent jobs when given.
    /// </summary>
    public static IRenderable Render(SwarmStatus status, int width = DefaultWidth, int? maxRecentJobs = null)
    {
        ArgumentNullException.ThrowIfNull(status);
        var layout = LayoutFor(width);
        return new Rows(
            Header(status),
            Coverage(status, width),
            Text.Empty,
            Nodes(status, layout),
            Links(status),
            Text.Empty,
            Jobs(status, layout, maxRecentJobs));
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
                char glyph = n.State == NodeStatus.Serving ? '█' : n.State is NodeStatus.Dead or NodeStatus.Left ? '·' : '▒';
                sb.Append(new string(' ', start * cell));
                sb.Append(CultureInfo.InvariantCulture, $"[{StateColor(n.State)}]{new string(glyph, (end - start) * cell)}[/]");
                sb.Append(new string(' ', (layers - end) * cell));
                sb.Append(CultureInfo.InvariantCulture, $"  {r.ToCliNotation()} [{StateColor(n.State)}]{StateName(n.State)}[/]");
            }
            else
            {
                sb.Append(CultureInfo.InvariantCulture, $"[dim]no layers[/] [{StateColor(n.State)}]{StateName(n.State)}[/]");
            }
            sb.AppendLine();
        }
        return new Markup(sb.ToString().TrimEnd('\n', '\r'));
    }

    /// <summary>How much room the tables have.</summary>
    internal enum Layout
    {
        /// <summary>Below 100 columns: borderless, only the columns an operator needs first.</summary>
        Narrow,
        /// <summary>100–139 columns: borderless, every column with short headers.</summary>
        Normal,
        /// <summary>140 columns and more: rounded borders, long headers.</summary>
        Wide,
    }

    /// <summary>The layout for a console <paramref name="width"/> columns wide.</summary>
    internal static Layout LayoutFor(int width) => width >= 140 ? Layout.Wide : width >= 100 ? Layout.Normal : Layout.Narrow;

    /// <summary>A table column: headers for wide and other layouts, and the narrowest layout that still shows it.</summary>
    private sealed record Column<T>(string Header, string ShortHeader, bool Right, Layout MinLayout, Func<T, IRenderable> Cell, bool Wrap = false);

    private static Table BuildTable<T>(Layout layout, string title, IEnumerable<Column<T>> columns, IEnumerable<T> rows)
    {
        var shown = columns.Where(c => layout >= c.MinLayout).ToList();
        var table = new Table().Title(title).Border(layout == Layout.Wide ? TableBorder.Rounded : TableBorder.None);
        foreach (var c in shown)
        {
            // Addresses and ranges must stay on one line; only free text (errors) may wrap.
            var col = new TableColumn($"[bold]{(layout == Layout.Wide ? c.Header : c.ShortHeader)}[/]");
            if (!c.Wrap) col.NoWrap();
            if (c.Right) col.RightAligned();
            if (layout != Layout.Wide) col.Padding(0, 0, layout == Layout.Narrow ? 1 : 2, 0);
            table.AddColumn(col);
        }
        foreach (var row in rows) table.AddRow(shown.Select(c => c.Cell(row)));
        return table;
    }

    private static Text Plain(string text) => new(text);

    private static IRenderable Nodes(SwarmStatus s, Layout layout)
    {
        int serving = s.Nodes.Count(n => n.State == NodeStatus.Serving);
        if (s.Nodes.Count == 0)
            return new Markup("[bold]Nodes[/]: none has joined yet (start one with [italic]swarm node --coordinator HOST:PORT --model DIR[/])\n");
        // Volunteers pick their names; a long one must not squeeze the other columns.
        int nameMax = layout switch { Layout.Wide => 24, Layout.Normal => 20, _ => 14 };
        Column<SwarmNodeStatus>[] columns =
        [
            new("Name", "Name", false, Layout.Narrow, n => new Markup($"[bold]{Markup.Escape(Truncate(n.Name, nameMax))}[/]")),
            new("Address", "Address", false, Layout.Narrow, n => Plain(n.Address)),
            new("Layers", "Layers", false, Layout.Narrow, n => Plain(n.RangeText)),
            new("Device", "Device", false, Layout.Narrow, n => Plain(n.Threads > 0 ? $"{n.Device} ×{n.Threads}" : n.Device)),
            new("State", "State", false, Layout.Narrow, n => new Markup($"[{StateColor(n.State)}]{StateName(n.State)}[/]")),
            new("In flight", "Load", true, Layout.Narrow, n => Plain(n.InFlight.ToString(CultureInfo.InvariantCulture))),
            new("Tokens/s", "Tok/s", true, Layout.Narrow, n => Plain(n.TokensPerS.ToString("F1", CultureInfo.InvariantCulture))),
            new("KV cache", "KV", true, Layout.Normal, n => KvCell(n, layout)),
            new("Sessions", "Sess", true, Layout.Normal, n => Plain(n.Sessions.ToString(CultureInfo.InvariantCulture))),
            new("Checks", "Chk", true, Layout.Normal, n => new Markup(n.Checks.Failed > 0
                ? string.Create(CultureInfo.InvariantCulture, $"{n.Checks.Passed}/[red]{n.Checks.Failed}✗[/]")
                : n.Checks.Passed.ToString(CultureInfo.InvariantCulture))),
            new("Last beat", "Beat", true, Layout.Narrow, n =>
                new Markup($"[{(n.LastHeartbeatMsAgo > 5000 ? "red" : n.LastHeartbeatMsAgo > 1500 ? "yellow" : "default")}]{Ago(n.LastHeartbeatMsAgo)}[/]")),
        ];
        return BuildTable(layout, $"[bold]Nodes[/] ({serving}/{s.Nodes.Count} serving)", columns, s.Nodes);
    }

    /// <summary>The node-to-node links with their path and round trip, on one line; nothing when no node handed steps on yet.</summary>
    private static IRenderable Links(SwarmStatus s)
    {
        var hops = s.Links.Where(l => l.To != "coordinator").ToList();
        if (hops.Count == 0) return Text.Empty;
        var parts = hops.Select(l => Markup.Escape(
            $"{l.From} → {l.To} {l.Path.ToString().ToLowerInvariant()}{(l.Via is { } via ? " via " + via : "")} {(l.RttMs is double rtt ? rtt.ToString("0.0", CultureInfo.InvariantCulture) + " ms" : "–")}"));
        return new Markup("[bold]Links[/]: " + string.Join(" · ", parts) + "\n");
    }

    private static Markup KvCell(SwarmNodeStatus n, Layout layout)
    {
        double kv = n.KvTokensCapacity > 0 ? (double)n.KvTokensUsed / n.KvTokensCapacity : 0;
        string color = kv >= 0.95 ? "red" : kv >= 0.75 ? "yellow" : "default";
        return new Markup(layout == Layout.Wide
            ? string.Create(CultureInfo.InvariantCulture, $"[{color}]{Count(n.KvTokensUsed)}/{Count(n.KvTokensCapacity)} {kv * 100:F0}%[/]")
            : string.Create(CultureInfo.InvariantCulture, $"[{color}]{kv * 100:F0}%[/]"));
    }

    private static IRenderable Jobs(SwarmStatus s, Layout layout, int? maxRecent)
    {
        var j = s.Jobs;
        var counters = new Markup(string.Create(CultureInfo.InvariantCulture,
            $"[bold]Jobs[/]: {j.Queued} queued · {j.Running} running · {j.Completed} completed · {(j.Failed > 0 ? "[red]" : "[default]")}{j.Failed} failed[/] · {j.Cancelled} cancelled · {(j.Rejected > 0 ? "[yellow]" : "[default]")}{j.Rejected} rejected[/]"));
        if (j.Recent.Count == 0) return new Rows(counters, new Markup("[dim]no recent jobs[/]"));
        Column<SwarmJobStatus>[] columns =
        [
            new("Job", "Job", false, Layout.Narrow, x => Plain(x.Id)),
            new("State", "State", false, Layout.Narrow, x => new Markup($"[{JobColor(x.State)}]{JobName(x.State)}[/]")),
            new("Prompt", "Prompt", true, Layout.Normal, x => Plain(x.PromptTokens.ToString(CultureInfo.InvariantCulture))),
            new("Generated", "Gen", true, Layout.Narrow, x => Plain(x.CompletionTokens.ToString(CultureInfo.InvariantCulture))),
            new("TTFT", "TTFT", true, Layout.Narrow, x => Plain(x.TtftMs is double t ? t.ToString("F1", CultureInfo.InvariantCulture) + " ms" : "–")),
            new("Tokens/s", "Tok/s", true, Layout.Narrow, x => Plain(x.TokensPerS is double r ? r.ToString("F1", CultureInfo.InvariantCulture) : "–")),
            new("Recoveries", "Rec", true, Layout.Normal, x => Plain(x.Recoveries.ToString(CultureInfo.InvariantCulture))),
            new("Finished", "Finished", true, Layout.Narrow, x => Plain(x.FinishedAgoS is double f ? Duration(f) + " ago" : "–")),
            new("Error", "Error", false, Layout.Narrow, x => new Markup(x.Error is null ? "" : $"[red]{Markup.Escape(x.Error)}[/]"), Wrap: true),
        ];
        var rows = maxRecent is int max ? j.Recent.Take(max) : j.Recent;
        return new Rows(counters, BuildTable(layout, "[bold]Recent jobs[/]", columns, rows));
    }

    /// <summary>The state as the JSON spells it (<c>serving</c>, <c>suspect</c>, …).</summary>
    public static string StateName(NodeStatus state) => JsonNamingPolicyLower(state.ToString());

    private static string JobName(SwarmJobState state) => JsonNamingPolicyLower(state.ToString());

    private static string JsonNamingPolicyLower(string name) => System.Text.Json.JsonNamingPolicy.SnakeCaseLower.ConvertName(name);

    private static string StateColor(NodeStatus state) => state switch
    {
        NodeStatus.Serving => "green",
        NodeStatus.Joining or NodeStatus.Loading => "deepskyblue1",
        NodeStatus.Draining or NodeStatus.Suspect => "yellow",
        NodeStatus.Dead or NodeStatus.Banned => "red",
        _ => "grey",
    };

    private static string JobColor(SwarmJobState state) => state switch
    {
        SwarmJobState.Done => "green",
        SwarmJobState.Running => "deepskyblue1",
        SwarmJobState.Failed => "red",
        SwarmJobState.Cancelled => "yellow",
        _ => "grey",
    };

    private static string Label(string name) => Markup.Escape(Truncate(name, LabelWidth - 1).PadRight(LabelWidth));

    private static string Truncate(string text, int max) => text.Length <= max ? text : text[..(max - 1)] + "…";

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
