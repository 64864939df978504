using System.CommandLine;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Swarm.Coordinator.Status;
using Swarm.Coordinator.Api;
using Swarm.Coordinator.Dashboard;
using Xunit;

namespace Swarm.Tests.Ops;

/// <summary><c>swarm status</c> invoked in-process against a real Kestrel serving canned JSON.</summary>
public sealed class StatusCommandTests
{
    private sealed record Result(int ExitCode, string Output, string Error);

    private static async Task<Result> InvokeAsync(string[] args, CancellationToken cancellationToken = default)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = await StatusCommand.Create().Parse(args)
            .InvokeAsync(new InvocationConfiguration { Output = output, Error = error }, cancellationToken);
        return new Result(code, output.ToString(), error.ToString());
    }

    private static Task<OpsTestHost> ServeAsync(SwarmStatus status) => OpsTestHost.StartAsync(app => app.MapSwarmStatus(() => status));

    [Fact]
    public async Task Status_TwoNodes_PrintsTable()
    {
        await using var host = await ServeAsync(OpsTestData.TwoNodes());

        var r = await InvokeAsync(["--url", host.BaseUrl]);

        Assert.True(r.ExitCode == 0, $"exit {r.ExitCode}: {r.Error}");
        Assert.Equal("", r.Error);
        Assert.Contains("node-alpha", r.Output);
        Assert.Contains("node-beta", r.Output);
        Assert.Contains("127.0.0.1:41235", r.Output);
        Assert.Contains("0:8 serving", r.Output);
        Assert.Contains("6:10 suspect", r.Output);
        Assert.Contains("replicas        1  1  1  1  1  1  2  2  1  1  0  0", r.Output);
        Assert.Contains("cmpl-failed01", r.Output);
    }

    [Fact]
    public async Task Status_Json_PrintsTheRawJson()
    {
        var status = OpsTestData.TwoNodes();
        await using var host = await ServeAsync(status);

        var r = await InvokeAsync(["--url", host.BaseUrl.TrimEnd('/'), "--json"]);

        Assert.True(r.ExitCode == 0, $"exit {r.ExitCode}: {r.Error}");
        Assert.Equal(status.ToJson(), r.Output.TrimEnd());
        using var doc = JsonDocument.Parse(r.Output);
        Assert.Equal(["node-alpha", "node-beta"], doc.RootElement.GetProperty("nodes").EnumerateArray().Select(n => n.GetProperty("name").GetString()));
    }

    [Fact]
    public async Task Status_Unreachable_ExitsOneWithOneLineMessage()
    {
        // Bound but never listening, and held for the whole test: connecting is refused, and the port cannot be handed
        // to another process meanwhile (as it could be once released).
        using var closed = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        closed.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        int port = ((IPEndPoint)closed.LocalEndPoint!).Port;

        var r = await InvokeAsync(["--url", $"http://127.0.0.1:{port}"]);

        Assert.Equal(1, r.ExitCode);
        Assert.Equal("", r.Output);
        string message = r.Error.TrimEnd();
        Assert.DoesNotContain('\n', message);
        Assert.StartsWith($"swarm status: cannot reach the coordinator at http://127.0.0.1:{port}/api/swarm (", message);
        Assert.Contains("refused", message, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task Status_HttpError_ExitsOneNamingTheStatus()
    {
        await using var host = await OpsTestHost.StartAsync(app => app.MapGet("/api/swarm", () => Results.StatusCode(500)));

        var r = await InvokeAsync(["--url", host.BaseUrl]);

        Assert.Equal(1, r.ExitCode);
        Assert.Contains("answered HTTP 500 Internal Server Error", r.Error);
    }

    [Fact]
    public async Task Status_NotAStatus_ExitsOneSayingSo()
    {
        await using var host = await OpsTestHost.StartAsync(app => app.MapGet("/api/swarm", () => Results.Text("{\"hello\":1}", "application/json")));

        var r = await InvokeAsync(["--url", host.BaseUrl, "--json"]);

        Assert.Equal(1, r.ExitCode);
        Assert.Equal("", r.Output);
        Assert.Contains("did not return a swarm status", r.Error);
    }

    [Fact]
    public async Task Status_SlowCoordinator_TimesOut()
    {
        await using var host = await OpsTestHost.StartAsync(app => app.MapGet("/api/swarm", async (CancellationToken ct) =>
        {
            await Task.Delay(TimeSpan.FromSeconds(10), ct);
            return Results.Ok();
        }));

        var r = await InvokeAsync(["--url", host.BaseUrl, "--timeout", "0.3"]);

        Assert.Equal(1, r.ExitCode);
        Assert.Contains("did not answer within 0.3 s", r.Error);
    }

    [Theory]
    [InlineData("ftp://x")]
    [InlineData("http://")]
    public async Task Status_BadUrl_ExitsTwo(string url)
    {
        var r = await InvokeAsync(["--url", url]);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("--url", r.Error);
    }

    [Fact]
    public async Task Status_TooShortInterval_ExitsTwo()
    {
        var r = await InvokeAsync(["--watch", "--interval", "0"]);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("--interval", r.Error);
    }

    [Theory]
    [InlineData("http://127.0.0.1:8080", "http://127.0.0.1:8080/api/swarm")]
    [InlineData("127.0.0.1:8080/", "http://127.0.0.1:8080/api/swarm")]
    [InlineData("https://swarm.example/ops/", "https://swarm.example/ops/api/swarm")]
    [InlineData("http://h:1/api/swarm", "http://h:1/api/swarm")]
    public void ResolveEndpoint_Forms(string url, string expected) =>
        Assert.Equal(expected, StatusClient.ResolveEndpoint(url).ToString());

    [Fact]
    public async Task Status_Watch_RefreshesUntilCancelled()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        int requests = 0;
        var status = OpsTestData.TwoNodes();
        await using var host = await OpsTestHost.StartAsync(app => app.MapGet("/api/swarm", () =>
        {
            // Third request: answer with a failure, fourth: stop the watch (as Ctrl-C would).
            int n = Interlocked.Increment(ref requests);
            if (n == 3) return Results.StatusCode(503);
            if (n >= 4) cts.Cancel();
            return Results.Text((status with { Recoveries = n }).ToJson(), "application/json");
        }));

        var r = await InvokeAsync(["--url", host.BaseUrl, "--watch", "--interval", "0.1"], cts.Token);

        Assert.Equal(0, r.ExitCode);
        Assert.True(requests >= 4, $"only {requests} requests");
        Assert.Contains("recoveries 1", r.Output);
        Assert.Contains("recoveries 2", r.Output);
        Assert.Contains("disconnected", r.Output);
        Assert.Contains("answered HTTP 503", r.Output);
        Assert.True(r.Output.Split("node-alpha").Length - 1 >= 4, "the watch did not redraw the node list each time");
    }

    [Fact]
    public async Task Status_WatchJson_PrintsOneDocumentPerLine()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        int requests = 0;
        var status = OpsTestData.TwoNodes();
        await using var host = await OpsTestHost.StartAsync(app => app.MapGet("/api/swarm", () =>
        {
            int n = Interlocked.Increment(ref requests);
            if (n == 2) return Results.StatusCode(502);
            if (n >= 3) cts.Cancel();
            return Results.Text(JsonSerializer.Serialize(JsonDocument.Parse((status with { Recoveries = n }).ToJson()), new JsonSerializerOptions { WriteIndented = true }), "application/json");
        }));

        var r = await InvokeAsync(["--url", host.BaseUrl, "--watch", "--json", "--interval", "0.1"], cts.Token);

        Assert.Equal(0, r.ExitCode);
        var lines = r.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length >= 1, "no JSON line printed");
        Assert.Equal(1, SwarmStatus.FromJson(lines[0]).Recoveries);
        Assert.All(lines, l => SwarmStatus.FromJson(l));
        Assert.Contains("answered HTTP 502", r.Error);
        Assert.Contains("(retrying)", r.Error);
    }
}
