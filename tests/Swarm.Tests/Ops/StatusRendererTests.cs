using Swarm.Coordinator.Status;
using Swarm.Coordinator.Api;
using Swarm.Coordinator.Membership;
using Xunit;

namespace Swarm.Tests.Ops;

public sealed class StatusRendererTests
{
    private static string[] Lines(string text) => text.ReplaceLineEndings("\n").Split('\n');

    /// <summary>The coverage bar line of <paramref name="node"/> (the node table has a line starting with the name too).</summary>
    private static string Bar(string[] lines, string node) =>
        lines.Single(l => l.StartsWith(node, StringComparison.Ordinal) && (l.Contains('█') || l.Contains('▒') || l.Contains('·') || l.Contains("no layers")));

    [Fact]
    public void RenderToText_TwoNodes_ShowsNodesRangesAndCoverage()
    {
        string text = StatusRenderer.RenderToText(OpsTestData.TwoNodes());
        var lines = Lines(text);

        Assert.Contains("pythia-160m", lines[0]);
        Assert.Contains("wire f16", lines[0]);
        Assert.Contains("up 1h 02m", lines[0]);
        Assert.Contains("recoveries 4", lines[0]);
        Assert.Contains("coverage: INCOMPLETE", text);
        Assert.Contains("layers 10-11 not served by any node", text);

        // Coverage strip: 14-column label, then three columns per layer.
        Assert.Contains("replicas        1  1  1  1  1  1  2  2  1  1  0  0", lines);
        Assert.Contains("layer           0  1  2  3  4  5  6  7  8  9 10 11", lines);
        string alphaBar = Bar(lines, "node-alpha");
        Assert.Equal(new string('█', 8 * 3), alphaBar.Substring(14, 24));
        Assert.EndsWith("0:8 serving", alphaBar.TrimEnd());
        string betaBar = Bar(lines, "node-beta");
        Assert.Equal(new string(' ', 6 * 3) + new string('▒', 4 * 3) + new string(' ', 2 * 3), betaBar.Substring(14, 36));
        Assert.EndsWith("6:10 suspect", betaBar.TrimEnd());

        // Node-to-node links on one line (the links to the coordinator are left out here).
        Assert.Contains("Links: node-alpha → node-beta relayed via node-gamma 61.5 ms", lines);

        // Node table rows: name, address, range, device, state, load, tokens/s, KV.
        string alphaRow = lines.Single(l => l.Contains("node-alpha", StringComparison.Ordinal) && l.Contains("127.0.0.1:41234", StringComparison.Ordinal));
        foreach (string cell in new[] { "0:8", "cpu ×2", "serving", "123.4", "19%", "120 ms" })
            Assert.Contains(cell, alphaRow);
        string betaRow = lines.Single(l => l.Contains("node-beta", StringComparison.Ordinal) && l.Contains("127.0.0.1:41235", StringComparison.Ordinal));
        foreach (string cell in new[] { "6:10", "cuda:0 ×4", "suspect", "87.3", "96%", "2.6 s" })
            Assert.Contains(cell, betaRow);
        Assert.Contains("Nodes (1/2 serving)", text);

        Assert.Contains("Jobs: 1 queued · 1 running · 10 completed · 1 failed · 2 cancelled · 3 rejected", text);
        foreach (string id in new[] { "cmpl-running1", "cmpl-done0001", "cmpl-failed01", "cmpl-cancel01" }) Assert.Contains(id, text);
        Assert.Contains("cancelled", lines.Single(l => l.Contains("cmpl-cancel01", StringComparison.Ordinal)));
        // A running job shows its progress so far: 3 tokens, first after 15.5 ms.
        string runningRow = lines.Single(l => l.Contains("cmpl-running1", StringComparison.Ordinal));
        Assert.Contains("running", runningRow);
        Assert.Contains("15.5 ms", runningRow);
        Assert.Contains("3.2 s ago", text);
        Assert.DoesNotContain("\u001b[", text);
    }

    [Fact]
    public void RenderToText_Covered_SaysComplete()
    {
        var s = OpsTestData.TwoNodes() with { Covered = true, Coverage = [2, 2, 1, 1], NumLayers = 4, Uncovered = null };
        string text = StatusRenderer.RenderToText(s);
        Assert.Contains("coverage: complete", text);
        Assert.Contains("≥ 1 replica", text);
        Assert.DoesNotContain("INCOMPLETE", text);
    }

    [Fact]
    public void RenderToText_NoNodesNoJobs_SaysSo()
    {
        var s = OpsTestData.TwoNodes() with { Nodes = [], Jobs = new SwarmJobsStatus(), Coverage = new int[12] };
        string text = StatusRenderer.RenderToText(s);
        Assert.Contains("none has joined yet", text);
        Assert.Contains("no recent jobs", text);
        Assert.Contains("replicas        0  0  0", text);
    }

    [Fact]
    public void RenderToText_NamesWithMarkup_PrintedLiterally()
    {
        var s = OpsTestData.TwoNodes();
        s = s with { Nodes = [s.Nodes[0] with { Name = "[red]evil[/]", State = NodeStatus.Dead }] };
        string text = StatusRenderer.RenderToText(s);
        Assert.Contains("[red]evil[/]", text);
        Assert.Contains("dead", text);
    }

    [Fact]
    public void RenderToText_DeepModel_UsesNarrowerCells()
    {
        int layers = 48;
        var coverage = Enumerable.Repeat(1, layers).ToArray();
        var s = OpsTestData.TwoNodes() with
        {
            NumLayers = layers, Coverage = coverage, Covered = true, Uncovered = null,
            Nodes = [OpsTestData.TwoNodes().Nodes[0] with { Layers = [0, 48] }],
        };
        var lines = Lines(StatusRenderer.RenderToText(s));
        Assert.Equal(new string('█', 48) + "  0:48", Bar(lines, "node-alpha").Substring(14, 54));
        Assert.All(lines, l => Assert.True(l.Length <= StatusRenderer.DefaultWidth, $"line wider than {StatusRenderer.DefaultWidth}: {l}"));

        var wide = Lines(StatusRenderer.RenderToText(s, width: 140));
        Assert.Equal(new string('█', 48 * 2) + "  0:48", Bar(wide, "node-alpha").Substring(14, 102));
    }

    [Fact]
    public void RenderToText_150Columns_BorderedTablesWithEveryDetail()
    {
        var lines = Lines(StatusRenderer.RenderToText(OpsTestData.TwoNodes(), width: 150));
        Assert.Contains(lines, l => l.StartsWith('╭'));
        Assert.Contains(lines, l => l.Contains("In flight", StringComparison.Ordinal) && l.Contains("Last beat", StringComparison.Ordinal));
        string alphaRow = lines.Single(l => l.Contains("127.0.0.1:41234", StringComparison.Ordinal));
        foreach (string cell in new[] { "│ node-alpha ", "│ 0:8 ", "1536/8192 19%", " 120 ms │" })
            Assert.Contains(cell, alphaRow);
        Assert.Contains(lines, l => l.Contains("│ Recoveries │", StringComparison.Ordinal));
    }

    [Fact]
    public void RenderToText_LongNodeName_TruncatedInTheTable()
    {
        var s = OpsTestData.TwoNodes();
        s = s with { Nodes = [s.Nodes[0] with { Name = "gpu-box-with-a-really-long-hostname.example.org" }] };
        var lines = Lines(StatusRenderer.RenderToText(s));
        string row = lines.Single(l => l.Contains("127.0.0.1:41234", StringComparison.Ordinal));
        Assert.StartsWith("gpu-box-with-a-real… ", row);
        Assert.Contains("0:8", row);
        Assert.Contains("120 ms", row);
    }

    [Fact]
    public void RenderToText_80Columns_CompactTablesKeepAddressesAndRangesWhole()
    {
        string text = StatusRenderer.RenderToText(OpsTestData.TwoNodes(), width: 80);
        var lines = Lines(text);

        Assert.All(lines, l => Assert.True(l.Length <= 80, $"line wider than 80: {l}"));
        string alphaRow = lines.Single(l => l.Contains("127.0.0.1:41234", StringComparison.Ordinal));
        foreach (string cell in new[] { "node-alpha", "0:8", "cpu ×2", "serving", "123.4", "120 ms" })
            Assert.Contains(cell, alphaRow);
        Assert.Contains("replicas        1  1  1  1  1  1  2  2  1  1  0  0", lines);
        Assert.DoesNotContain("KV", text);
        Assert.Contains("cmpl-done0001", text);
    }

    [Fact]
    public void RenderToText_36LayersIn80Columns_NarrowsTheCells()
    {
        var s = OpsTestData.TwoNodes() with
        {
            NumLayers = 36, Coverage = Enumerable.Repeat(1, 36).ToArray(), Covered = true, Uncovered = null,
            Nodes = [OpsTestData.TwoNodes().Nodes[0] with { Layers = [0, 36] }],
        };
        var lines = Lines(StatusRenderer.RenderToText(s, width: 80));
        string bar = Bar(lines, "node-alpha");
        Assert.Equal(new string('█', 36), bar.Substring(14, 36));
        Assert.EndsWith("0:36 serving", bar.TrimEnd());
    }

    [Theory]
    [InlineData(3.21, "3.2 s")]
    [InlineData(42, "42 s")]
    [InlineData(185, "3m 05s")]
    [InlineData(3723.4, "1h 02m")]
    [InlineData(2 * 86400 + 3 * 3600 + 4 * 60, "2d 3h 04m")]
    public void Duration_Formats(double seconds, string expected) => Assert.Equal(expected, StatusRenderer.Duration(seconds));
}
