using System.Diagnostics;
using Microsoft.Extensions.Logging.Abstractions;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;
using Swarm.Coordinator.Jobs;
using Swarm.Coordinator.Service;
using Swarm.Coordinator.Telemetry;
using Swarm.Model;
using Swarm.Sampling;
using Swarm.Telemetry;
using Swarm.Tests.Model;
using Xunit;

namespace Swarm.Tests.Telemetry;

/// <summary>
/// The coordinator's real job path (admission, routing, step loop, recovery) in-process against a
/// <see cref="FakeNode"/> over the real transport, observed with the in-memory exporters.
/// Serial (the "processes" collection): the meter and activity source are process-wide, so a job
/// running in parallel elsewhere would add to the counts.
/// </summary>
[Collection("processes")]
public sealed class CoordinatorTelemetryTests
{
    private static string Checkpoint => Path.Combine(Fixture.Root, Fixture.Tiny, "checkpoint");

    [Fact]
    public async Task JobWithOneFailedStep_RecordsTokensLatenciesOutcomeRecoveryAndGauges()
    {
        var metrics = new List<MetricSnapshot>();
        var spans = new List<Activity>();
        using var meterProvider = Sdk.CreateMeterProviderBuilder().AddMeter(CoordinatorInstrumentation.Name).AddInMemoryExporter(metrics).Build();
        using var tracerProvider = Sdk.CreateTracerProviderBuilder().AddSource(CoordinatorInstrumentation.Name).AddInMemoryExporter(spans).Build();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));

        var config = ModelConfig.Load(Checkpoint);
        await using var swarm = new SwarmCoordinator(new CoordinatorOptions { Model = Checkpoint, Listen = "127.0.0.1:0" }, NullLogger<SwarmCoordinator>.Instance);
        await swarm.StartAsync(cts.Token);
        using var jobs = new JobRunner(swarm, NullLogger<JobRunner>.Instance);
        await using var node = new FakeNode(config) { FailStep = 1 };
        await node.RegisterAsync(swarm.ControlEndPoint!, cts.Token);
        while (!swarm.Registry.ServingCoverage(config.NumLayers).IsCovered) await Task.Delay(20, cts.Token);
        while (swarm.Live.Values.Sum(l => l.KvTokensCapacity) == 0) await Task.Delay(20, cts.Token); // a heartbeat arrived

        var result = await jobs.RunAsync(new JobSpec([1, 2, 3], new SamplingOptions { MaxNewTokens = 4 }, []), null, cts.Token);
        Assert.Equal([100, 101, 102, 103], result.TokenIds);
        Assert.Equal(1, result.Recoveries);

        meterProvider.ForceFlush();
        Assert.Equal(4, Sum(metrics, "swarm.tokens.generated"));
        Assert.Equal(1, Sum(metrics, "swarm.jobs", ("outcome", "completed")));
        Assert.Equal(1, HistogramCount(metrics, "swarm.job.time_to_first_token"));
        Assert.Equal(3, HistogramCount(metrics, "swarm.job.time_per_output_token"));
        Assert.True(HistogramSum(metrics, "swarm.job.time_to_first_token") > 0);
        Assert.Equal(1, Sum(metrics, "swarm.recoveries", ("swarm.reason", "Overloaded")));
        Assert.Equal(1, Gauge(metrics, "swarm.nodes", ("state", "suspect")) + Gauge(metrics, "swarm.nodes", ("state", "serving")));
        Assert.Equal(0, Gauge(metrics, "swarm.nodes", ("state", "dead")));
        Assert.Equal(1, Gauge(metrics, "swarm.layers.min_replicas"));
        for (int layer = 0; layer < config.NumLayers; layer++) Assert.Equal(1, Gauge(metrics, "swarm.layer.replicas", ("layer", layer)));
        Assert.Equal(0, Gauge(metrics, "swarm.jobs.queued"));
        Assert.Equal(7, Gauge(metrics, "swarm.kv.used"));
        Assert.Equal(1000, Gauge(metrics, "swarm.kv.capacity"));
        Assert.True(Sum(metrics, "swarm.transport.io", ("direction", "transmit")) > 0);
        Assert.True(Sum(metrics, "swarm.transport.io", ("direction", "receive")) > 0);

        // One trace: job → route ×2 (initial + after the failure) and step ×5 (4 steps + the failed attempt).
        tracerProvider.ForceFlush();
        var job = Assert.Single(spans, s => s.DisplayName == CoordinatorInstrumentation.JobSpan && (string?)s.GetTagItem(SwarmTelemetry.JobIdTag) == result.Id);
        Assert.Equal(default, job.ParentSpanId);
        var children = spans.Where(s => s.TraceId == job.TraceId && s != job).ToList();
        Assert.All(children, s => Assert.Equal(job.SpanId, s.ParentSpanId));
        Assert.Equal(2, children.Count(s => s.DisplayName == CoordinatorInstrumentation.RouteSpan));
        var steps = children.Where(s => s.DisplayName == CoordinatorInstrumentation.StepSpan).ToList();
        Assert.Equal(["prefill", "decode", "replay", "decode", "decode"], steps.OrderBy(s => s.StartTimeUtc).Select(s => (string)s.GetTagItem(SwarmTelemetry.StepKindTag)!));
        var failed = Assert.Single(steps, s => s.Status == ActivityStatusCode.Error);
        var failure = Assert.Single(failed.Events);
        Assert.Equal(CoordinatorInstrumentation.StepFailedEvent, failure.Name);
        Assert.Equal(node.NodeId, Tag(failure, SwarmTelemetry.NodeIdTag));
        Assert.Equal("Overloaded", Tag(failure, SwarmTelemetry.ErrorCodeTag));
        Assert.Equal("fake overload", Tag(failure, SwarmTelemetry.ReasonTag));
        var recovery = Assert.Single(job.Events, e => e.Name == CoordinatorInstrumentation.RecoveryEvent);
        Assert.Equal(node.NodeId, Tag(recovery, SwarmTelemetry.NodeIdTag));
        Assert.Equal(1, Tag(recovery, SwarmTelemetry.StepTag));
        Assert.Equal("length", job.GetTagItem("swarm.finish_reason"));

        // The wire carried each attempt's step span as the parent context.
        var received = node.Received.ToList();
        Assert.Equal(5, received.Count);
        var stepIds = steps.Select(s => s.SpanId.ToHexString()).ToHashSet();
        foreach (var (_, traceParent) in received)
        {
            Assert.True(ActivityContext.TryParse(traceParent, null, out var ctx), $"bad traceparent '{traceParent}'");
            Assert.Equal(job.TraceId, ctx.TraceId);
            Assert.Contains(ctx.SpanId.ToHexString(), stepIds);
        }
        await swarm.StopAsync(CancellationToken.None);
    }

    [Fact]
    public void StartJob_ParentIsRecordedAmbient_OrRemoteHttpContext_NeverAnUnexportedLocalActivity()
    {
        var spans = new List<Activity>();
        using var tracerProvider = Sdk.CreateTracerProviderBuilder().AddSource(CoordinatorInstrumentation.Name).AddInMemoryExporter(spans).Build();

        // No ambient activity: a new trace.
        using (var job = CoordinatorInstrumentation.StartJob("a", 3, 4)!)
            Assert.Equal(default, job.ParentSpanId);

        // An unrecorded hosting activity without a remote parent (ASP.NET Core creates one per request): ignored.
        var hosting = new Activity("Microsoft.AspNetCore.Hosting.HttpRequestIn").Start();
        using (var job = CoordinatorInstrumentation.StartJob("b", 3, 4)!)
        {
            Assert.Equal(default, job.ParentSpanId);
            Assert.NotEqual(hosting.TraceId, job.TraceId);
        }
        hosting.Stop();

        // The client sent a traceparent header: the job joins the client's trace.
        const string remote = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        var request = new Activity("Microsoft.AspNetCore.Hosting.HttpRequestIn").SetParentId(remote).Start();
        using (var job = CoordinatorInstrumentation.StartJob("c", 3, 4)!)
        {
            Assert.Equal("0af7651916cd43dd8448eb211c80319c", job.TraceId.ToHexString());
            Assert.Equal("b7ad6b7169203331", job.ParentSpanId.ToHexString());
        }
        request.Stop();

        // An exported span around the job (a caller's own instrumentation): the job is its child.
        using var outerSource = new ActivitySource("Swarm.Tests.Outer");
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s == outerSource,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
        };
        ActivitySource.AddActivityListener(listener);
        using (var outer = outerSource.StartActivity("outer")!)
        using (var job = CoordinatorInstrumentation.StartJob("d", 3, 4)!)
        {
            Assert.Equal(outer.TraceId, job.TraceId);
            Assert.Equal(outer.SpanId, job.ParentSpanId);
        }
        Assert.Null(Activity.Current);
    }

    private static object? Tag(ActivityEvent e, string key) => e.Tags.FirstOrDefault(t => t.Key == key).Value;

    /// <summary>Points of the last export of <paramref name="name"/> whose tags include every one of <paramref name="tags"/>.</summary>
    private static List<MetricPoint> Points(List<MetricSnapshot> metrics, string name, (string Key, object Value)[] tags)
    {
        var metric = metrics.LastOrDefault(m => m.Name == name) ?? throw new Xunit.Sdk.XunitException($"metric {name} was not exported");
        var points = new List<MetricPoint>();
        foreach (var p in metric.MetricPoints)
        {
            var have = new Dictionary<string, object?>();
            foreach (var t in p.Tags) have[t.Key] = t.Value;
            if (tags.All(t => have.TryGetValue(t.Key, out var v) && Equals(Convert.ToString(v), Convert.ToString(t.Value)))) points.Add(p);
        }
        return points;
    }

    private static long Sum(List<MetricSnapshot> metrics, string name, params (string, object)[] tags) =>
        Points(metrics, name, tags).Sum(p => p.GetSumLong());

    private static long Gauge(List<MetricSnapshot> metrics, string name, params (string, object)[] tags) =>
        Points(metrics, name, tags).Sum(p => p.GetGaugeLastValueLong());

    private static long HistogramCount(List<MetricSnapshot> metrics, string name) => Points(metrics, name, []).Sum(p => p.GetHistogramCount());

    private static double HistogramSum(List<MetricSnapshot> metrics, string name) => Points(metrics, name, []).Sum(p => p.GetHistogramSum());
}
