using System.Diagnostics;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Swarm.Cli;
using Swarm.Node;
using Swarm.Sampling;
using Swarm.Tests.Model;
using Swarm.Tests.Ops;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Integration;

/// <summary>One 2-node swarm (real processes) on the tiny fixture, shared by the API tests below.</summary>
public sealed class TinySwarmFixture : IAsyncLifetime
{
    internal LocalSwarm Swarm { get; private set; } = null!;
    internal Fixture Fx { get; } = new(Fixture.Tiny);

    public async Task InitializeAsync() =>
        Swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
        {
            Model = Fx.CheckpointDir, Nodes = 2, Layers = ["0:2", "2:4"], WireDtype = "f32", ThreadsPerNode = 1,
        });

    public async Task DisposeAsync()
    {
        await Swarm.DisposeAsync();
        Fx.Dispose();
    }
}

[Collection("processes")]
public class SwarmApiTests(TinySwarmFixture swarm, ITestOutputHelper output) : IClassFixture<TinySwarmFixture>
{
    private string Url => swarm.Swarm.HttpUrl;

    [Theory]
    [InlineData("{not json", "invalid")]
    [InlineData("{\"max_tokens\":4}", "prompt")]
    [InlineData("{\"prompt\":[1,2],\"max_tokens\":0}", "max_tokens")]
    [InlineData("{\"prompt\":[1,2],\"max_tokens\":100000}", "max_tokens")]
    [InlineData("{\"prompt\":[1,2],\"model\":\"gpt-4\"}", "model")]
    [InlineData("{\"prompt\":[1,2],\"temperature\":\"hot\"}", "temperature")]
    [InlineData("{\"prompt\":\"hello\"}", "tokenizer")]
    public async Task BadRequest_Gets400WithJsonError_AndTheSwarmKeepsServing(string body, string mentions)
    {
        var (status, json) = await SwarmClient.PostAsync(Url, body);
        Assert.Equal(400, status);
        string message = json!["error"]!["message"]!.GetValue<string>();
        output.WriteLine(message);
        Assert.Contains(mentions, message + " " + json["error"]!["param"], StringComparison.OrdinalIgnoreCase);
        Assert.Equal("invalid_request_error", (string?)json["error"]!["type"]);
        // Nothing else is lost: a good request right after still works.
        Assert.Equal(swarm.Fx.Ids("greedy.1")[..4], await SwarmClient.CompleteAsync(Url, swarm.Fx.Ids("prompt.1"), 4));
    }

    [Fact]
    public async Task TopPBelowFloatRange_SamplesTheGreedyTokens()
    {
        // top_p 1e-50 used to become 0 as a float32 on the wire, fail validation and end the job with HTTP 500.
        var body = SwarmClient.Body(swarm.Fx.Ids("prompt.1"), 4);
        body["temperature"] = 1.0;
        body["top_p"] = 1e-50;
        body["seed"] = 7;
        var (status, json) = await SwarmClient.PostAsync(Url, body.ToJsonString());
        Assert.True(status == 200, $"HTTP {status}: {json?.ToJsonString()}");
        var tokens = json!["choices"]![0]!["token_ids"]!.AsArray().Select(t => (long)t!).ToArray();
        Assert.Equal(swarm.Fx.Ids("greedy.1")[..4], tokens);
    }

    [Fact]
    public async Task PromptLongerThanContext_Gets400()
    {
        var prompt = Enumerable.Range(0, 300).Select(i => (long)(i % 500)).ToArray(); // context is 256
        var (status, json) = await SwarmClient.PostAsync(Url, SwarmClient.Body(prompt, 4).ToJsonString());
        Assert.Equal(400, status);
        Assert.Contains("context", (string)json!["error"]!["message"]!, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task SixteenConcurrentJobs_EachReturnWhatItReturnsAlone()
    {
        var prompts = Enumerable.Range(0, 16).Select(i => Enumerable.Range(0, 1 + i % 7).Select(k => (long)((i * 37 + k * 11) % 512)).ToArray()).ToArray();
        int[] lengths = Enumerable.Range(0, 16).Select(i => 4 + i % 9).ToArray();
        // Alone: the single-process engine on the same checkpoint.
        var expected = new long[16][];
        using (var ckpt = Swarm.Checkpoints.Checkpoint.Open(swarm.Fx.CheckpointDir))
        using (var gen = LocalPipeline.Load(ckpt))
        {
            for (int i = 0; i < 16; i++)
                expected[i] = gen.Generate(prompts[i].Select(t => (int)t).ToArray(), SamplingOptions.Greedy(lengths[i])).TokenIds.Select(t => (long)t).ToArray();
        }
        var results = await Task.WhenAll(Enumerable.Range(0, 16).Select(i => SwarmClient.CompleteAsync(Url, prompts[i], lengths[i])));
        for (int i = 0; i < 16; i++) Assert.Equal(expected[i], results[i]);
    }

    [Fact]
    public async Task Dashboard_RendersTheRealNodes_AndStatusJsonListsThem()
    {
        await SwarmClient.CompleteAsync(Url, swarm.Fx.Ids("prompt.0"), 3);
        string dom = await ChromiumRenderer.DumpDomAsync(Url + "/");
        DashboardDom.AssertShowsNodes(dom, [("node-1", "0:2"), ("node-2", "2:4")]);
        string png = Path.Combine(TestArtifacts.Directory, "dashboard-live-swarm.png");
        await ChromiumRenderer.ScreenshotAsync(Url + "/", png);
        Assert.True(new FileInfo(png).Length > 1000);
        output.WriteLine($"screenshot: {png}");

        // swarm status --json, the real command in-process, prints /api/swarm with both nodes.
        var writer = new StringWriter();
        int exit = Swarm.Coordinator.Status.StatusCommand.Create().Parse(["--url", Url, "--json"])
            .Invoke(new System.CommandLine.InvocationConfiguration { Output = writer, Error = writer });
        Assert.Equal(0, exit);
        var status = JsonNode.Parse(writer.ToString())!;
        var names = status["nodes"]!.AsArray().Select(n => (string)n!["name"]!).OrderBy(n => n).ToArray();
        Assert.Equal(["node-1", "node-2"], names);
        Assert.True((bool)status["covered"]!);
        Assert.True((long)status["jobs"]!["completed"]! >= 1);
    }
}

[Collection("processes")]
public class SwarmAccessTests(ITestOutputHelper output)
{
    [Fact]
    public async Task NodeWithWrongSecret_IsRefusedWithLoggedReason_AndExits()
    {
        using var fx = new Fixture(Fixture.Tiny);
        using var tmp = new Swarm.Tests.Presets.TempDir();
        await using var swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
        {
            Model = fx.CheckpointDir, Nodes = 1, Layers = ["0:4"], Secret = "right-secret", ThreadsPerNode = 1,
        }, output.WriteLine);
        var (exit, log) = await SecureSwarmTests.RunNodeAsync(swarm, fx, tmp.Sub("wrong.identity"), "--secret", "wrong-secret");
        output.WriteLine(log);
        Assert.NotEqual(0, exit);
        // The secret is the PSK of the Noise handshake: it is never sent; the coordinator finds the mismatch in
        // handshake message 3 and closes the connection saying why.
        Assert.Contains($"127.0.0.1:{swarm.ControlPort} refused the connection: the swarm secrets differ", log);
        // The coordinator logged the reason too, and still serves with its authenticated node.
        string coordLog = await File.ReadAllTextAsync(Path.Combine(swarm.LogDir, "coordinator.log"));
        Assert.Matches(@"Refused connection from 127\.0\.0\.1:[0-9]+: the swarm secrets differ", coordLog);
        var status = (await swarm.GetJsonAsync("/api/swarm"))!;
        Assert.Single(status["nodes"]!.AsArray());
        Assert.Equal(fx.Ids("greedy.1")[..3], await SwarmClient.CompleteAsync(swarm.HttpUrl, fx.Ids("prompt.1"), 3));
    }

    [Fact]
    public void NonLoopbackWithoutSecret_RefusesToStart()
    {
        var node = new Swarm.Node.NodeOptions { Coordinator = "10.0.0.1:7700", Model = Path.GetTempPath(), Listen = "0.0.0.0:7801" };
        Assert.Contains(node.Validate(), e => e.Contains("secret"));
        var coord = new Swarm.Coordinator.Service.CoordinatorOptions { Model = Path.GetTempPath(), Listen = "0.0.0.0:7700" };
        Assert.Contains(coord.Validate(), e => e.Contains("secret"));
        Assert.DoesNotContain(new Swarm.Coordinator.Service.CoordinatorOptions { Model = Path.GetTempPath() }.Validate(), e => e.Contains("secret"));
    }
}

[Collection("processes")]
public class CancellationTests(ITestOutputHelper output)
{
    [Fact]
    public async Task ClientGoesAway_JobIsCancelled_AndNodesFreeTheSession()
    {
        using var fx = new Fixture(Fixture.Small);
        await using var swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
        {
            Model = fx.CheckpointDir, Nodes = 2, Layers = ["0:3", "3:6"], WireDtype = "f32", ThreadsPerNode = 1,
            NodeArgs = ["--simulate-latency-ms", "20"],
        }, output.WriteLine);
        using var http = new HttpClient();
        using var cts = new CancellationTokenSource();
        var body = SwarmClient.Body(fx.Ids("prompt.1"), 400, stream: true).ToJsonString();
        using var req = new HttpRequestMessage(HttpMethod.Post, swarm.HttpUrl + "/v1/completions") { Content = new StringContent(body, System.Text.Encoding.UTF8, "application/json") };
        var resp = await http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead, cts.Token);
        var reader = new StreamReader(await resp.Content.ReadAsStreamAsync(cts.Token));
        int lines = 0;
        while (lines < 5 && await reader.ReadLineAsync(cts.Token) is { } line) if (line.StartsWith("data: ")) lines++;
        // The client goes away mid-stream.
        cts.Cancel();
        resp.Dispose();
        var sw = Stopwatch.StartNew();
        JsonNode status = null!;
        while (sw.Elapsed < TimeSpan.FromSeconds(20))
        {
            status = (await swarm.GetJsonAsync("/api/swarm"))!;
            bool idle = (long)status["jobs"]!["running"]! == 0
                && status["nodes"]!.AsArray().All(n => (long)n!["sessions"]! == 0 && (long)n["in_flight"]! == 0);
            if (idle) break;
            await Task.Delay(200);
        }
        output.WriteLine(status.ToJsonString());
        Assert.Equal(0, (long)status["jobs"]!["running"]!);
        Assert.All(status["nodes"]!.AsArray(), n => Assert.Equal(0, (long)n!["sessions"]!));
        // One outcome everywhere: cancelled in /api/swarm (what the dashboard and swarm status show) and in swarm_jobs_total.
        Assert.Equal((1L, 0L), ((long?)status["jobs"]!["cancelled"], (long)status["jobs"]!["failed"]!));
        var job = Assert.Single(status["jobs"]!["recent"]!.AsArray())!;
        Assert.Equal(("cancelled", "the client went away"), ((string?)job["state"], (string?)job["error"]));
        string metrics = await http.GetStringAsync(swarm.HttpUrl + "/metrics");
        var outcomes = Regex.Matches(metrics, "^swarm_jobs_total\\{[^}]*outcome=\"([a-z]+)\"[^}]*\\} ([0-9]+)", RegexOptions.Multiline)
            .ToDictionary(m => m.Groups[1].Value, m => long.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(new Dictionary<string, long> { ["cancelled"] = 1 }, outcomes);
        // The swarm is not disturbed: the next job runs.
        Assert.Equal(fx.Ids("greedy.0")[..3], await SwarmClient.CompleteAsync(swarm.HttpUrl, fx.Ids("prompt.0"), 3));
    }
}
