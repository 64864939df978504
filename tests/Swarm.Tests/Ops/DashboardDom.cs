using System.Net;
using System.Text.RegularExpressions;
using Xunit;

namespace Swarm.Tests.Ops;

/// <summary>
/// Reads the dashboard's DOM as dumped by <see cref="ChromiumRenderer.DumpDomAsync"/>: node rows, coverage cells and
/// the connection state, by the page's stable ids and data attributes.
/// </summary>
public static partial class DashboardDom
{
    /// <summary><c>connected</c>, <c>disconnected</c> or <c>loading</c> (the page never got an answer yet).</summary>
    public static string ConnectionState(string dom)
    {
        var m = BodyConn().Match(dom);
        return m.Success ? m.Groups[1].Value : throw new Xunit.Sdk.XunitException("the DOM has no <body data-conn=…>; is this the Swarm dashboard?\n" + Head(dom));
    }

    /// <summary>The visible text of the node table's row for <paramref name="nodeName"/>, cells separated by " | "; null when absent.</summary>
    public static string? NodeRowText(string dom, string nodeName)
    {
        string marker = $"<tr data-node-name=\"{WebUtility.HtmlEncode(nodeName)}\"";
        int start = dom.IndexOf(marker, StringComparison.Ordinal);
        if (start < 0) return null;
        int end = dom.IndexOf("</tr>", start, StringComparison.Ordinal);
        return end < 0 ? null : Text(dom[start..end]);
    }

    /// <summary>The visible text of the links table's row from <paramref name="from"/> to <paramref name="to"/>, cells separated by " | "; null when absent.</summary>
    public static string? LinkRowText(string dom, string from, string to)
    {
        string marker = $"<tr data-link-from=\"{WebUtility.HtmlEncode(from)}\" data-link-to=\"{WebUtility.HtmlEncode(to)}\"";
        int start = dom.IndexOf(marker, StringComparison.Ordinal);
        if (start < 0) return null;
        int end = dom.IndexOf("</tr>", start, StringComparison.Ordinal);
        return end < 0 ? null : Text(dom[start..end]);
    }

    /// <summary>Replicas shown per layer in the coverage strip (<c>data-replicas</c> of each <c>.layer-cell</c>), by layer.</summary>
    public static IReadOnlyDictionary<int, int> CoverageCells(string dom) =>
        LayerCell().Matches(dom).ToDictionary(m => int.Parse(m.Groups["layer"].Value), m => int.Parse(m.Groups["replicas"].Value));

    /// <summary>The <c>data-layers</c> of the coverage bar drawn for <paramref name="nodeName"/>; null when there is none.</summary>
    public static string? NodeBarLayers(string dom, string nodeName)
    {
        var m = Regex.Match(dom, $"<div class=\"node-bar [^\"]*\" data-node-name=\"{Regex.Escape(WebUtility.HtmlEncode(nodeName))}\" data-layers=\"([^\"]*)\"");
        return m.Success ? m.Groups[1].Value : null;
    }

    /// <summary>The visible text of the element with id <paramref name="id"/> (up to its first closing tag of the same name).</summary>
    public static string? TextOfId(string dom, string id)
    {
        var m = Regex.Match(dom, $"<(\\w+)[^>]*\\bid=\"{Regex.Escape(id)}\"[^>]*>");
        if (!m.Success) return null;
        int end = dom.IndexOf($"</{m.Groups[1].Value}>", m.Index + m.Length, StringComparison.Ordinal);
        return end < 0 ? null : Text(dom[m.Index..end]);
    }

    /// <summary>True when the element with id <paramref name="id"/> carries the <c>hidden</c> attribute.</summary>
    public static bool IsHidden(string dom, string id)
    {
        var m = Regex.Match(dom, $"<\\w+[^>]*\\bid=\"{Regex.Escape(id)}\"[^>]*>");
        Assert.True(m.Success, $"no element with id '{id}' in the DOM");
        return Regex.IsMatch(m.Value, "\\shidden(=\"[^\"]*\")?[\\s>]");
    }

    /// <summary>
    /// Asserts the dashboard is connected and shows every node of <paramref name="expected"/> with its range (<c>A:B</c>)
    /// in both the node table and the coverage bars. Works on the DOM of a real swarm as well as a test host.
    /// </summary>
    public static void AssertShowsNodes(string dom, IEnumerable<(string Name, string Range)> expected)
    {
        Assert.True(ConnectionState(dom) == "connected",
            $"the dashboard is '{ConnectionState(dom)}', not connected; banner: {TextOfId(dom, "banner-disconnected")}");
        foreach (var (name, range) in expected)
        {
            string? row = NodeRowText(dom, name);
            Assert.True(row is not null, $"no row for node '{name}' in the node table. Rows: {string.Join(" / ", NodeNames(dom))}");
            Assert.True(row!.Split(" | ").Contains(range), $"node '{name}' row does not show range {range}: {row}");
            Assert.Equal(range, NodeBarLayers(dom, name));
        }
    }

    /// <summary>Names of all rows of the node table.</summary>
    public static IReadOnlyList<string> NodeNames(string dom) =>
        NodeRow().Matches(dom).Select(m => WebUtility.HtmlDecode(m.Groups[1].Value)).ToList();

    private static string Text(string html)
    {
        string cells = Regex.Replace(html, "</t[dh]>", " | ");
        string text = WebUtility.HtmlDecode(Regex.Replace(cells, "<[^>]+>", " "));
        text = Regex.Replace(text, "[ \\t\\r\\n]+", " ").Trim();
        text = Regex.Replace(text, "( ?\\| ?)+", " | ");
        return text.Trim(' ', '|');
    }

    private static string Head(string dom) => dom.Length <= 400 ? dom : dom[..400] + "…";

    [GeneratedRegex("<body[^>]*\\bdata-conn=\"([a-z]+)\"")]
    private static partial Regex BodyConn();

    [GeneratedRegex("<div class=\"layer-cell[^\"]*\" data-layer=\"(?<layer>\\d+)\" data-replicas=\"(?<replicas>\\d+)\"")]
    private static partial Regex LayerCell();

    [GeneratedRegex("<tr data-node-name=\"([^\"]*)\"")]
    private static partial Regex NodeRow();
}
