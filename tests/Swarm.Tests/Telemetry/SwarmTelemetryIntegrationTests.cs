using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Swarm.Cli;
using Swarm.Coordinator.Telemetry;
using Swarm.Node.Telemetry;
using Swarm.Tests.Integration;
using Swarm.Tests.Model;
using Swarm.Tests.Ops;
using Xunit;

namespace Swarm.Tests.Telemetry;

/// <summary>
/// A coordinator and two node processes (layers 0:2 and 2:4 of the tiny fixture), each writing its spans to its
/// own <c>SWARM_TRACE_FILE</c> and each node serving <c>--metrics</c>; one greedy generation over HTTP, then the
/// tests read what the processes exported.
/// </summary>
public sealed class TwoNodeSwarmWithOneJob : IAsyncLifetime
{
    public string TraceDir { get; } = Path.Combine(Path.GetTempPath(), $"swarm-traces-{Environment.ProcessId}-{Guid.NewGuid():N}");
    // A node's Prometheus listener cannot bind port 0 and report back: its ports are reserved up front.
    private readonly ReservedPort[] _metricsPorts = [ReservedPort.Take(), ReservedPort.Take()];
    public int[] NodeMetricsPorts => [.. _metricsPorts.Select(p => p.Port)];
    internal LocalSwarm Swarm { get; private set; } = null!;
    public JsonNode Completion { get; private set; } = null!;
    public long[] Tokens { get; private set; } = [];
    public string CompletionId => (string)Completion["id"]!;
    /// <summary>Trace context the test sends as the client's, in a <c>traceparent</c> header.</summary>
    public string ClientTraceId { get; } = ActivityTraceId.CreateRandom().ToHexString();
    public string ClientSpanId { get; } = ActivitySpanId.CreateRandom().ToHexString();

    /// <summary>A stand-in OTLP/HTTP collector every process exports to: (path, body) of each request.</summary>
    public System.Collections.Concurrent.ConcurrentQueue<(string Path, string ContentType, byte[] Body)> OtlpRequests { get; } = new();
    private OpsTestHost? _collector;

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(TraceDir);
        _collector = await OpsTestHost.StartAsync(app => app.MapPost("/{**path}", CollectAsync));
        string collector = _collector.BaseUrl.TrimEnd('/');
        Swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
        {
            Model = Path.Combine(Fixture.Root, Fixture.Tiny, "checkpoint"),
            Nodes = 2,
            Layers = ["0:2", "2:4"],
            ThreadsPerNode = 1,
            Environment = new Dictionary<string, string>
            {
                [TelemetrySettings.TraceFileVariable] = Path.Combine(TraceDir, "{process}.jsonl"),
                ["SWARM_COORDINATOR__OTLPENDPOINT"] = collector,
                ["SWARM_NODE__OTLPENDPOINT"] = collector,
                ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf",
                ["OTEL_BSP_SCHEDULE_DELAY"] = "200",
                ["OTEL_METRIC_EXPORT_INTERVAL"] = "1000",
            },
            NodeMetricsPorts = NodeMetricsPorts,
        });
        // As an instrumented client would: the job must join the client's trace.
        using var http = new HttpClient { Timeout = TimeSpan.FromMinutes(2) };
        using var request = new HttpRequestMessage(HttpMethod.Post, Swarm.HttpUrl + "/v1/completions")
        {
            Content = new StringContent("""{"prompt":[1,2,3],"max_tokens":6,"temperature":0}""", System.Text.Encoding.UTF8, "application/json"),
        };
        request.Headers.Add("traceparent", $"00-{ClientTraceId}-{ClientSpanId}-01");
        var response = await http.SendAsync(request);
        string body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"HTTP {(int)response.StatusCode}: {body}");
        Completion = JsonNode.Parse(body)!;
        Tokens = SwarmIntegrationTests.Tokens(Completion);
        Recoveries = (int?)Completion["swarm"]?["recoveries"] ?? 0;
    }

    /// <summary>Route repairs the job needed (a loaded machine can make a step time out); each re-runs steps, counted below.</summary>
    public int Recoveries { get; private set; }

    private async Task CollectAsync(HttpContext ctx)
    {
        using var body = new MemoryStream();
        await ctx.Request.Body.CopyToAsync(body);
        OtlpRequests.Enqueue((ctx.Request.Path.Value ?? "", ctx.Request.ContentType ?? "", body.ToArray()));
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "application/x-protobuf";
    }

    public async Task DisposeAsync()
    {
        if (Swarm is not null) await Swarm.DisposeAsync();
        if (_collector is not null) await _collector.DisposeAsync();
        foreach (var p in _metricsPorts) p.Dispose();
        try { Directory.Delete(TraceDir, recursive: true); }
        catch (IOException) { }
    }
}

[Collection("processes")]
public sealed class SwarmTelemetryIntegrationTests(TwoNodeSwarmWithOneJob swarm) : IClassFixture<TwoNodeSwarmWithOneJob>
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(10) };

    private sealed record Span(string TraceId, string SpanId, string? ParentId, string Name, string Service, string? Instance, JsonObject Tags, JsonArray Events);

    private List<Span> ReadSpans() =>
        Directory.EnumerateFiles(swarm.TraceDir, "*.jsonl")
            .SelectMany(f => File.ReadAllLines(f))
            .Where(l => l.EndsWith('}'))   // a line being written right now is skipped, not misparsed
            .Select(l => JsonNode.Parse(l)!.AsObject())
            .Select(o => new Span((string)o["trace_id"]!, (string)o["span_id"]!, (string?)o["parent_id"], (string)o["name"]!,
                (string)o["service"]!, (string?)o["instance"], o["tags"]!.AsObject(), o["events"]!.AsArray()))
            .ToList();

    [Fact]
    public async Task OneGeneration_SpansOfCoordinatorAndBothNodes_ShareOneTraceAndFormATree()
    {
        int n = swarm.Tokens.Length;
        Assert.Equal(6, n);
        // Spans are written when they end; the last node's span ends just after it sends the token, so wait briefly.
        List<Span> spans = [];
        var deadline = DateTime.UtcNow.AddSeconds(15);
        while (DateTime.UtcNow < deadline)
        {
            spans = ReadSpans();
            if (spans.Count(s => s.Name == NodeInstrumentation.SampleSpan) >= n && spans.Count(s => s.Name == NodeInstrumentation.ForwardSpan) >= 2 * n
                && spans.Any(s => s.Name == CoordinatorInstrumentation.JobSpan)) break;
            await Task.Delay(100);
        }
        string summary = string.Join("\n", spans.Select(s => $"{s.Service}/{s.Instance} {s.Name} {s.SpanId} ← {s.ParentId} ({s.TraceId})"));

        var job = Assert.Single(spans, s => s.Name == CoordinatorInstrumentation.JobSpan);
        Assert.Equal(swarm.CompletionId, (string?)job.Tags["swarm.job.id"]);
        // The job continues the client's trace (traceparent header); everything else hangs below the job.
        Assert.Equal(swarm.ClientTraceId, job.TraceId);
        Assert.Equal(swarm.ClientSpanId, job.ParentId);
        Assert.True(spans.All(s => s.TraceId == job.TraceId), $"more than one trace:\n{summary}");
        Assert.Equal(["swarm-coordinator", "swarm-node"], spans.Select(s => s.Service).Distinct().Order());
        Assert.Equal(["node-1", "node-2"], spans.Where(s => s.Service == "swarm-node").Select(s => s.Instance).Distinct().Order());

        // A tree: every span but the root has its parent among the collected spans, from coordinator to the last node.
        var byId = spans.ToDictionary(s => s.SpanId);
        Assert.True(spans.Where(s => s != job).All(s => s.ParentId is not null && byId.ContainsKey(s.ParentId)), $"orphan spans:\n{summary}");
        Span Parent(Span s) => byId[s.ParentId!];

        var steps = spans.Where(s => s.Name == CoordinatorInstrumentation.StepSpan).ToList();
        Assert.Equal(n + swarm.Recoveries, steps.Count); // a repaired route re-sends the failed step
        Assert.All(steps, s => Assert.Equal(job, Parent(s)));
        // One route, plus one more per repair (a repaired job routes again).
        Assert.InRange(spans.Count(s => s.Name == CoordinatorInstrumentation.RouteSpan && Parent(s) == job), 1, 1 + swarm.Recoveries);

        var first = spans.Where(s => s.Name == NodeInstrumentation.ForwardSpan && s.Instance == "node-1").ToList();
        var second = spans.Where(s => s.Name == NodeInstrumentation.ForwardSpan && s.Instance == "node-2").ToList();
        Assert.InRange(first.Count, n, n + swarm.Recoveries);
        Assert.InRange(second.Count, n, n + swarm.Recoveries);
        Assert.All(first, s =>
        {
            Assert.Equal(CoordinatorInstrumentation.StepSpan, Parent(s).Name);
            Assert.Equal((int)Parent(s).Tags["swarm.step"]!, (int)s.Tags["swarm.step"]!);
            Assert.Equal("[0,2)", (string?)s.Tags["swarm.layers"]);
        });
        Assert.All(second, s =>
        {
            Assert.Equal(NodeInstrumentation.ForwardSpan, Parent(s).Name);
            Assert.Equal("node-1", Parent(s).Instance);
            Assert.Equal((int)Parent(s).Tags["swarm.step"]!, (int)s.Tags["swarm.step"]!);
        });
        // Each node's spans name it by its key's fingerprint, the one /api/swarm shows for it.
        var status = (await swarm.Swarm.GetJsonAsync("/api/swarm"))!;
        string KeyOf(string name) => (string)status["nodes"]!.AsArray().Single(x => (string)x!["name"]! == name)!["key"]!;
        Assert.StartsWith("swarm:", KeyOf("node-1"));
        Assert.NotEqual(KeyOf("node-1"), KeyOf("node-2"));
        Assert.All(first, s => Assert.Equal(KeyOf("node-1"), (string?)s.Tags["swarm.node.key"]));
        Assert.All(second, s => Assert.Equal(KeyOf("node-2"), (string?)s.Tags["swarm.node.key"]));
        var samples = spans.Where(s => s.Name == NodeInstrumentation.SampleSpan).ToList();
        Assert.InRange(samples.Count, n, n + swarm.Recoveries);
        Assert.All(samples, s => Assert.Equal("node-2", Parent(s).Instance));
        Assert.All(samples, s => Assert.Equal(NodeInstrumentation.ForwardSpan, Parent(s).Name));
        if (swarm.Recoveries == 0)
            Assert.Equal(["prefill", "decode", "decode", "decode", "decode", "decode"],
                steps.OrderBy(s => (int)s.Tags["swarm.step"]!).Select(s => (string)s.Tags["swarm.step.kind"]!));
    }

    [Fact]
    public async Task OneGeneration_CoordinatorMetrics_CountTheTokens_AndPassPromtool()
    {
        string text = await Http.GetStringAsync(swarm.Swarm.HttpUrl + "/metrics");
        await Promtool.AssertValidAsync(text, "the coordinator's /metrics");
        Assert.Equal(swarm.Tokens.Length, Value(text, "swarm_tokens_generated_total"));
        Assert.Equal(1, Value(text, "swarm_jobs_total", "outcome=\"completed\""));
        Assert.Equal(1, Value(text, "swarm_job_time_to_first_token_seconds_count"));
        Assert.Equal(swarm.Tokens.Length - 1, Value(text, "swarm_job_time_per_output_token_seconds_count"));
        // Both registered and routable (a heartbeat late under load makes a node "suspect" for a moment, not gone).
        Assert.Equal(2, Value(text, "swarm_nodes", "state=\"serving\"") + Value(text, "swarm_nodes", "state=\"suspect\""));
        Assert.Equal(0, Value(text, "swarm_nodes", "state=\"dead\""));
        Assert.Equal(1, Value(text, "swarm_layers_min_replicas"));
        Assert.True(Value(text, "swarm_transport_io_bytes_total", "direction=\"transmit\"") > 0, $"no bytes sent:\n{text}");
        // Both nodes authenticated over the secure channel; nothing was refused or dropped.
        Assert.True(Value(text, "swarm_transport_handshakes_total", "outcome=\"established\"") >= 2, $"handshakes:\n{text}");
        Assert.Equal(0, Value(text, "swarm_transport_records_rejected_total", "reason=\"unauthenticated\""));
    }

    [Fact]
    public async Task OneGeneration_NodeMetrics_CountTheirForwards_AndPassPromtool()
    {
        int n = swarm.Tokens.Length;
        for (int i = 0; i < 2; i++)
        {
            // KV and session gauges come from the node's last heartbeat (sent every 500 ms): wait for one after the load.
            string url = $"http://127.0.0.1:{swarm.NodeMetricsPorts[i]}/metrics", text = await Http.GetStringAsync(url);
            for (var until = DateTime.UtcNow.AddSeconds(10); Value(text, "swarm_node_kv_capacity") == 0 && DateTime.UtcNow < until; text = await Http.GetStringAsync(url))
                await Task.Delay(200);
            await Promtool.AssertValidAsync(text, $"node-{i + 1}'s /metrics");
            int extra = swarm.Recoveries; // a repaired route re-runs the failed step (as a replay of the tokens so far)
            Assert.InRange(Value(text, "swarm_node_steps_total", "outcome=\"ok\""), n, n + extra);
            // The prompt's prefill, plus one per repair that replays the tokens so far on this node.
            Assert.InRange(Value(text, "swarm_node_forward_duration_seconds_count", "swarm_step_kind=\"prefill\""), 1, 1 + extra);
            Assert.InRange(Value(text, "swarm_node_forward_duration_seconds_count", "swarm_step_kind=\"decode\""), n - 1 - extra, n - 1);
            Assert.InRange(Value(text, "swarm_node_batch_size_count"), n, n + extra);
            if (extra == 0) Assert.Equal(3 + (n - 1), Value(text, "swarm_node_tokens_total"));  // the 3-token prompt, then one per decode step
            Assert.Equal(1, Value(text, "swarm_node_state", "state=\"ready\""));
            Assert.True(Value(text, "swarm_node_kv_capacity") > 0, $"node-{i + 1} reports no KV capacity:\n{text}");
        }
    }

    [Fact]
    public async Task OneGeneration_OtlpOverHttp_ExportsTracesAndMetricsOfEveryProcess()
    {
        // Protobuf carries strings as raw UTF-8, so names can be found in the bodies without decoding them.
        static bool Has(byte[] body, string text) => body.AsSpan().IndexOf(System.Text.Encoding.UTF8.GetBytes(text)) >= 0;
        bool Sent(string path, params string[] texts) => swarm.OtlpRequests.Any(r => r.Path == path && texts.All(t => Has(r.Body, t)));
        (string Path, string[] Texts, string What)[] expected =
        [
            ("/v1/traces", ["swarm-coordinator", CoordinatorInstrumentation.JobSpan, CoordinatorInstrumentation.StepSpan, "swarm.job.id"], "coordinator spans"),
            ("/v1/traces", ["swarm-node", NodeInstrumentation.ForwardSpan], "node stage.forward spans"),
            ("/v1/traces", ["swarm-node", NodeInstrumentation.SampleSpan], "the sample span"),
            ("/v1/metrics", ["swarm-coordinator", "swarm.tokens.generated"], "coordinator metrics"),
            ("/v1/metrics", ["swarm-node", "swarm.node.forward.duration"], "node metrics"),
        ];
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (DateTime.UtcNow < deadline && !expected.All(e => Sent(e.Path, e.Texts)))
            await Task.Delay(200);
        string seen = string.Join(", ", swarm.OtlpRequests.Select(r => $"{r.Path} ({r.Body.Length} B)"));
        foreach (var e in expected)
            Assert.True(Sent(e.Path, e.Texts), $"no OTLP export of {e.What} to {e.Path}; requests: {seen}");
        Assert.All(swarm.OtlpRequests, r => Assert.Equal("application/x-protobuf", r.ContentType));
    }

    /// <summary>The value of the one sample of <paramref name="metric"/> whose labels contain every one of <paramref name="labels"/>.</summary>
    private static double Value(string exposition, string metric, params string[] labels)
    {
        var matches = exposition.Split('\n')
            .Select(l => Regex.Match(l, @"^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?<labels>[^}]*)\})? (?<value>\S+)"))
            .Where(m => m.Success && m.Groups["name"].Value == metric && labels.All(l => m.Groups["labels"].Value.Contains(l, StringComparison.Ordinal)))
            .ToList();
        Assert.True(matches.Count == 1, $"expected one sample of {metric}{{{string.Join(",", labels)}}}, found {matches.Count} in:\n{exposition}");
        return double.Parse(matches[0].Groups["value"].Value, CultureInfo.InvariantCulture);
    }
}
