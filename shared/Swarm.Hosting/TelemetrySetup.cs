using System.Net;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace Swarm.Hosting;

/// <summary>What a daemon exports, decided at start from its options and the environment.</summary>
public sealed record TelemetrySettings
{
    /// <summary>Environment variable naming a file that receives one JSON line per finished span (a debugging aid; see <see cref="JsonLinesActivityExporter"/>).</summary>
    public const string TraceFileVariable = "SWARM_TRACE_FILE";
    /// <summary>Environment variable that, set to 1 or true, prints spans and metrics on the console.</summary>
    public const string ConsoleVariable = "SWARM_TELEMETRY_CONSOLE";

    /// <summary><c>service.name</c> of the resource: swarm-coordinator or swarm-node.</summary>
    public required string ServiceName { get; init; }
    /// <summary><c>service.instance.id</c> (the node's name), or null.</summary>
    public string? InstanceId { get; init; }
    /// <summary>The assembly's activity source and meter name (they share it).</summary>
    public required string SourceName { get; init; }
    /// <summary>OTLP endpoint for traces and metrics, or null.</summary>
    public string? OtlpEndpoint { get; init; }
    /// <summary>Value of <see cref="TraceFileVariable"/>, or null.</summary>
    public string? TraceFile { get; init; }
    /// <summary>Whether <see cref="ConsoleVariable"/> asks for the console exporter.</summary>
    public bool Console { get; init; }

    public bool TracesExported => OtlpEndpoint is not null || TraceFile is not null || Console;

    public static TelemetrySettings FromEnvironment(string serviceName, string sourceName, string? instanceId, string? otlpEndpoint) => new()
    {
        ServiceName = serviceName,
        SourceName = sourceName,
        InstanceId = instanceId,
        OtlpEndpoint = string.IsNullOrWhiteSpace(otlpEndpoint) ? null : otlpEndpoint,
        TraceFile = Environment.GetEnvironmentVariable(TraceFileVariable) is { Length: > 0 } f ? f : null,
        Console = Environment.GetEnvironmentVariable(ConsoleVariable) is "1" or "true" or "TRUE" or "True",
    };
}

/// <summary>
/// Wires OpenTelemetry exporters into a daemon's host: the instrumentation lives in the libraries
/// (<c>CoordinatorInstrumentation</c>, <c>NodeInstrumentation</c>), only hosts know about exporters.
/// Metrics: whatever <c>addScrapeExporter</c> adds (Prometheus), OTLP when an endpoint is set,
/// the console when <c>SWARM_TELEMETRY_CONSOLE=1</c>. Traces: OTLP, console, and the JSON-lines file of
/// <c>SWARM_TRACE_FILE</c> — tracing is off (no spans are even created) when none of them is configured.
/// </summary>
public static class TelemetrySetup
{
    public static void AddSwarmTelemetry(this IServiceCollection services, TelemetrySettings s, Action<MeterProviderBuilder>? addScrapeExporter = null)
    {
        bool metrics = addScrapeExporter is not null || s.OtlpEndpoint is not null || s.Console;
        if (!metrics && !s.TracesExported) return;
        var otel = services.AddOpenTelemetry().ConfigureResource(r => r.AddService(s.ServiceName, serviceVersion: Swarm.Telemetry.SwarmTelemetry.Version,
            serviceInstanceId: s.InstanceId, autoGenerateServiceInstanceId: s.InstanceId is null));
        if (s.TracesExported)
        {
            otel.WithTracing(t =>
            {
                t.AddSource(s.SourceName);
                if (s.OtlpEndpoint is { } endpoint) t.AddOtlpExporter(o => ConfigureOtlp(o, endpoint, "v1/traces"));
                if (s.Console) t.AddConsoleExporter();
                // Synchronous, so a span is on disk when it ends: tests read the file right after a job.
                if (s.TraceFile is { } file) t.AddProcessor(new SimpleActivityExportProcessor(new JsonLinesActivityExporter(file)));
            });
        }
        if (metrics)
        {
            otel.WithMetrics(m =>
            {
                m.AddMeter(s.SourceName);
                addScrapeExporter?.Invoke(m);
                if (s.OtlpEndpoint is { } endpoint) m.AddOtlpExporter(o => ConfigureOtlp(o, endpoint, "v1/metrics"));
                if (s.Console) m.AddConsoleExporter((_, reader) => reader.PeriodicExportingMetricReaderOptions.ExportIntervalMilliseconds = 10_000);
            });
        }
    }

    /// <summary>
    /// Adds the node's optional Prometheus listener: <c>http://HOST:PORT/metrics</c>, HOST being the node's
    /// listen address (all interfaces when that is 0.0.0.0, as in containers).
    /// </summary>
    public static Action<MeterProviderBuilder>? NodeScrapeExporter(int port, IPAddress listen)
    {
        if (port <= 0) return null;
        string host = listen.Equals(IPAddress.Any) || listen.Equals(IPAddress.IPv6Any) ? "+"
            : listen.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{listen}]" : listen.ToString();
        return m => m.AddPrometheusHttpListener(o =>
        {
            o.Port = port;
            o.ConfigureHttpListener = (opt, listener) =>
            {
                listener.Prefixes.Clear();
                listener.Prefixes.Add($"http://{host}:{opt.Port}/metrics/");
            };
        });
    }

    /// <summary>
    /// gRPC unless <c>OTEL_EXPORTER_OTLP_PROTOCOL</c> says otherwise or the port is 4318 (OTLP/HTTP's);
    /// with HTTP the signal's path is appended to a bare endpoint, as the SDK does only for its environment variable.
    /// </summary>
    private static void ConfigureOtlp(OtlpExporterOptions o, string endpoint, string signalPath)
    {
        var uri = new Uri(endpoint);
        if (Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_PROTOCOL") is null && uri.Port == 4318) o.Protocol = OtlpExportProtocol.HttpProtobuf;
        if (o.Protocol == OtlpExportProtocol.HttpProtobuf && uri.AbsolutePath is "" or "/") uri = new Uri(uri, signalPath);
        o.Endpoint = uri;
    }
}
