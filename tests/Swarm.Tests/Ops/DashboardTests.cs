using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Swarm.Coordinator.Api;
using Swarm.Coordinator.Dashboard;
using Swarm.Coordinator.Security;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Ops;

/// <summary>The dashboard page rendered by headless Chromium against a real Kestrel serving a canned <c>/api/swarm</c>.</summary>
public sealed class DashboardTests(ITestOutputHelper output)
{
    private static Task<OpsTestHost> ServeAsync(SwarmStatus status) => OpsTestHost.StartAsync(app =>
    {
        app.MapSwarmDashboard();
        app.MapSwarmStatus(() => status);
    });

    [Fact]
    public async Task Dashboard_TwoNodes_RendersNodesRangesAndCoverage()
    {
        var status = OpsTestData.TwoNodes();
        await using var host = await ServeAsync(status);

        string dom = await ChromiumRenderer.DumpDomAsync(host.BaseUrl);

        DashboardDom.AssertShowsNodes(dom, [("node-alpha", "0:8"), ("node-beta", "6:10")]);
        string alpha = DashboardDom.NodeRowText(dom, "node-alpha")!;
        Assert.Contains("127.0.0.1:41234", alpha);
        Assert.Contains("serving", alpha);
        Assert.Contains("123.4", alpha);
        Assert.Contains("suspect", DashboardDom.NodeRowText(dom, "node-beta")!);
        Assert.Equal("node-alpha | node-beta | relayed via node-gamma | 61.5 ms", DashboardDom.LinkRowText(dom, "node-alpha", "node-beta"));
        Assert.Equal("node-beta | coordinator | direct | –", DashboardDom.LinkRowText(dom, "node-beta", "coordinator"));

        var cells = DashboardDom.CoverageCells(dom);
        Assert.Equal(Enumerable.Range(0, 12), cells.Keys.Order());
        Assert.Equal(status.Coverage, cells.OrderBy(c => c.Key).Select(c => c.Value));
        Assert.Contains("layers 10-11", DashboardDom.TextOfId(dom, "stat-uncovered"));
        Assert.Equal("4", DashboardDom.TextOfId(dom, "stat-recoveries"));
        Assert.Equal("1h 02m", DashboardDom.TextOfId(dom, "stat-uptime"));
        Assert.Contains("cmpl-failed01", dom);
        // One set of outcomes: the counters and the cancelled job's state as /api/swarm gives them.
        Assert.Equal(("1", "2", "3"), (DashboardDom.TextOfId(dom, "jobs-failed"), DashboardDom.TextOfId(dom, "jobs-cancelled"), DashboardDom.TextOfId(dom, "jobs-rejected")));
        Assert.Matches("data-job-id=\"cmpl-cancel01\" data-state=\"cancelled\"", dom);
        Assert.Contains("layers 10-11 are not served by any node", dom);
        Assert.True(DashboardDom.IsHidden(dom, "banner-disconnected"), "the disconnected banner shows although polling works");
    }

    private const string ApiKey = "dashboard-key-0123456789abcdef";

    private static Task<OpsTestHost> ServeWithKeyAsync(SwarmStatus status) => OpsTestHost.StartAsync(app =>
    {
        app.MapSwarmDashboard();
        app.MapSwarmStatus(() => status);
    }, new HttpAccessKeys(new BearerKeySet([ApiKey]), BearerKeySet.None));

    [Fact]
    public async Task Dashboard_CoordinatorWithApiKey_AsksForTheKeyInsteadOfFailingSilently()
    {
        await using var host = await ServeWithKeyAsync(OpsTestData.TwoNodes());

        string dom = await ChromiumRenderer.DumpDomAsync(host.BaseUrl, virtualTimeBudgetMs: 3000);

        Assert.Equal("locked", DashboardDom.ConnectionState(dom));
        Assert.False(DashboardDom.IsHidden(dom, "key-prompt"), "the API key prompt is hidden although /api/swarm answered 401");
        Assert.Contains("API key required", DashboardDom.TextOfId(dom, "key-prompt"));
        Assert.Equal("", DashboardDom.TextOfId(dom, "key-message"));
        Assert.True(DashboardDom.IsHidden(dom, "banner-disconnected"), "a 401 is not a lost connection");
        Assert.Empty(DashboardDom.NodeNames(dom));
    }

    [Fact]
    public async Task Dashboard_KeyHandedOverInTheFragment_ShowsTheSwarm_AndAWrongOneIsRefused()
    {
        await using var host = await ServeWithKeyAsync(OpsTestData.TwoNodes());

        string dom = await ChromiumRenderer.DumpDomAsync(host.BaseUrl + "#key=" + ApiKey);
        DashboardDom.AssertShowsNodes(dom, [("node-alpha", "0:8"), ("node-beta", "6:10")]);
        Assert.True(DashboardDom.IsHidden(dom, "key-prompt"), "the key prompt shows although the key was accepted");
        Assert.False(DashboardDom.IsHidden(dom, "key-forget"), "no way to forget the key");

        dom = await ChromiumRenderer.DumpDomAsync(host.BaseUrl + "#key=not-the-key", virtualTimeBudgetMs: 3000);
        Assert.Equal("locked", DashboardDom.ConnectionState(dom));
        Assert.Equal("The coordinator refused this key.", DashboardDom.TextOfId(dom, "key-message"));
    }

    [Fact]
    public async Task Dashboard_StatusApiFailing_ShowsDisconnectedBanner()
    {
        await using var host = await OpsTestHost.StartAsync(app =>
        {
            app.MapSwarmDashboard();
            app.MapGet("/api/swarm", () => Results.StatusCode(StatusCodes.Status503ServiceUnavailable));
        });

        string dom = await ChromiumRenderer.DumpDomAsync(host.BaseUrl, virtualTimeBudgetMs: 3000);

        Assert.Equal("disconnected", DashboardDom.ConnectionState(dom));
        Assert.False(DashboardDom.IsHidden(dom, "banner-disconnected"), "the disconnected banner is hidden while /api/swarm fails");
        Assert.Contains("HTTP 503", DashboardDom.TextOfId(dom, "banner-disconnected"));
        Assert.Empty(DashboardDom.NodeNames(dom));
    }

    [Fact]
    public async Task Dashboard_NodeNameWithMarkup_IsShownAsText()
    {
        var status = OpsTestData.TwoNodes();
        status = status with { Nodes = [status.Nodes[0] with { Name = "<img src=x onerror=alert(1)>" }, status.Nodes[1]] };
        await using var host = await ServeAsync(status);

        string dom = await ChromiumRenderer.DumpDomAsync(host.BaseUrl);

        Assert.DoesNotContain("<img", dom, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("&lt;img src=x onerror=alert(1)&gt;", dom);
        DashboardDom.AssertShowsNodes(dom, [("<img src=x onerror=alert(1)>", "0:8"), ("node-beta", "6:10")]);
    }

    [Fact]
    public async Task Dashboard_Screenshot_ShowsColouredCoverageStrip()
    {
        await using var host = await ServeAsync(OpsTestData.TwoNodes());
        foreach (string theme in new[] { "light", "dark" })
        {
            string path = Path.Combine(TestArtifacts.Directory, $"dashboard-{theme}.png");

            await ChromiumRenderer.ScreenshotAsync(host.BaseUrl + "?theme=" + theme, path, width: 1280, height: 900);

            output.WriteLine($"dashboard screenshot ({theme}): {path}");
            var png = PngImage.Load(path);
            Assert.Equal((1280, 900), (png.Width, png.Height));
            // Two uncovered layers are painted --cov0 (#e5484d, striped) and the single-replica layers --cov1.
            Assert.True(png.CountNear(0xe5484d) > 300, $"{theme}: the uncovered layers' red is missing from {path}");
            Assert.True(png.CountNear(theme == "light" ? 0xa6d98c : 0x6fae58) > 1000, $"{theme}: the one-replica green is missing from {path}");
        }
    }

    [Fact]
    public async Task DashboardEndpoint_ServesSelfContainedHtmlWithCspAndEtag()
    {
        await using var host = await ServeAsync(OpsTestData.TwoNodes());
        using var http = new HttpClient();

        using var page = await http.GetAsync(host.BaseUrl);
        string html = await page.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Equal("text/html", page.Content.Headers.ContentType?.MediaType);
        Assert.Equal("utf-8", page.Content.Headers.ContentType?.CharSet);
        Assert.Contains("default-src 'none'", page.Headers.GetValues("Content-Security-Policy").Single());
        Assert.Contains("<title>Swarm</title>", html);
        // Offline machines: nothing may be fetched from elsewhere.
        Assert.DoesNotContain("http://", html);
        Assert.DoesNotContain("https://", html);
        Assert.DoesNotContain("<link", html);
        Assert.DoesNotContain("<script src", html);
        Assert.DoesNotContain("@import", html);

        using var again = new HttpRequestMessage(HttpMethod.Get, host.BaseUrl);
        again.Headers.IfNoneMatch.Add(page.Headers.ETag!);
        using var notModified = await http.SendAsync(again);
        Assert.Equal(HttpStatusCode.NotModified, notModified.StatusCode);

        using var api = await http.GetAsync(host.BaseUrl + "api/swarm");
        Assert.Equal("application/json", api.Content.Headers.ContentType?.MediaType);
        var roundTrip = SwarmStatus.FromJson(await api.Content.ReadAsStringAsync());
        Assert.Equal(new[] { "node-alpha", "node-beta" }, roundTrip.Nodes.Select(n => n.Name));
    }
}
