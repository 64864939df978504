using System.CommandLine;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Metrics;
using Swarm.Cli.Telemetry;
using Swarm.Coordinator.Telemetry;
using Swarm.Coordinator.Service;
using Swarm.Node;
using Swarm.Node.Telemetry;
using Swarm.Transport;

namespace Swarm.Cli.Commands;

/// <summary><c>swarm node</c> and <c>swarm coordinator</c>: the two daemons, as Generic Hosts.</summary>
internal static class DaemonCommands
{
    public static Command Node()
    {
        var cfg = new DaemonConfig("Node");
        cfg.Flag<string>("--coordinator", "Coordinator", "Coordinator address HOST:PORT (required)");
        cfg.Flag<string>("--model", "Model", "Checkpoint folder (required)");
        cfg.Flag<string>("--layers", "Layers", "Pin layers A:B (half-open); default: the coordinator assigns a range");
        cfg.Flag<string>("--memory", "Memory", "Memory budget for weights + KV cache, e.g. 8GB (default 4GB)");
        cfg.Flag<int>("--tp", "Tp", "Tensor-parallel shards per layer (default 1)");
        cfg.Flag<string>("--devices", "Devices", "Device per tensor-parallel shard: cpu (default) or cuda:0,cuda:1,…");
        cfg.Flag<int>("--threads", "Threads", "CPU threads (default: all cores)");
        cfg.Flag<string>("--name", "Name", "Name shown in status");
        cfg.Flag<string>("--listen", "Listen", "Node-to-node address HOST:PORT (default 127.0.0.1:0)");
        cfg.Flag<string>("--advertise", "Advertise", "Address other nodes use to reach this one (default: --listen)");
        cfg.Flag<string>("--secret", "Secret", "Swarm secret (or SWARM_SECRET); optional on loopback only");
        cfg.Flag<string>("--dtype", "Dtype", "Compute dtype f32 (default) or bf16");
        cfg.Flag<int>("--metrics-port", "MetricsPort", "Serve Prometheus /metrics on this TCP port (default off)", "--metrics");
        cfg.Flag<string>("--otlp-endpoint", "OtlpEndpoint", "OTLP collector for this node's traces and metrics");
        cfg.Flag<double>("--session-ttl", "SessionTtlSeconds", "Seconds after which an idle session is freed (default 300)");
        cfg.Flag<int>("--simulate-latency-ms", "SimulateLatencyMs", "Delay each step's output by this many ms (emulates a WAN hop on loopback)");
        var cmd = new Command("node", "Run a worker node that hosts a range of layers");
        cfg.AddTo(cmd);
        cmd.SetAction(async (r, ct) =>
        {
            var options = cfg.Bind<NodeOptions>(r);
            var errors = options.Validate();
            if (errors.Count > 0) throw new UsageException("invalid node settings:\n  " + string.Join("\n  ", errors));
            var builder = Host.CreateApplicationBuilder();
            ConfigureLogging(builder.Logging);
            builder.Services.AddSingleton(options);
            NodeOptions.TryParseEndPoint(options.Listen, out var listen);
            builder.Services.AddSwarmTelemetry(
                TelemetrySettings.FromEnvironment("swarm-node", NodeInstrumentation.Name, options.Name, options.OtlpEndpoint),
                TelemetrySetup.NodeScrapeExporter(options.MetricsPort, listen!.Address));
            builder.Services.AddHostedService<NodeDaemon>();
            builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(15));
            using var host = builder.Build();
            await host.RunAsync(ct);
            return Environment.ExitCode;
        });
        return cmd;
    }

    public static Command Coordinator()
    {
        var cfg = new DaemonConfig("Coordinator");
        cfg.Flag<string>("--listen", "Listen", "Address nodes connect to, HOST:PORT (default 127.0.0.1:7700)");
        cfg.Flag<string>("--http", "Http", "HTTP API address HOST:PORT (default 127.0.0.1:8080)");
        cfg.Flag<string>("--model", "Model", "Checkpoint folder: config.json and tokenizer.json are read (required)");
        cfg.Flag<string>("--model-name", "ModelName", "Name served in /v1/models (default: folder name)");
        cfg.Flag<string>("--wire-dtype", "WireDtype", "Activations between stages: f16 (default) or f32");
        cfg.Flag<string>("--secret", "Secret", "Swarm secret (or SWARM_SECRET); optional on loopback only");
        cfg.Flag<int>("--max-concurrent-jobs", "MaxConcurrentJobs", "Jobs generating at once (default 16)");
        cfg.Flag<int>("--max-queue-length", "MaxQueueLength", "Most queued jobs (default 256); beyond it HTTP 429");
        cfg.Duration("--queue-timeout", "QueueTimeout", "How long a job waits for a slot or full coverage (default 30s)");
        cfg.Duration("--step-timeout", "StepTimeout", "Wait for one step's reply before re-routing (default 30s)");
        cfg.Flag<int>("--max-recoveries", "MaxRecoveriesPerJob", "Route repairs per job before it fails (default 8)");
        cfg.Duration("--heartbeat-interval", "HeartbeatInterval", "How often nodes send heartbeats (default 500ms)");
        cfg.Duration("--suspect-after", "SuspectAfter", "Heartbeat silence before a node is suspect (default 1.25s)");
        cfg.Duration("--dead-after", "DeadAfter", "Heartbeat silence before a node is confirmed dead (default 2.5s)");
        cfg.Flag<string>("--otlp-endpoint", "OtlpEndpoint", "OTLP endpoint for traces and metrics");
        var cmd = new Command("coordinator", "Run the coordinator: placement, routing, jobs, HTTP API");
        cfg.AddTo(cmd);
        cmd.SetAction(async (r, ct) =>
        {
            var options = cfg.Bind<CoordinatorOptions>(r);
            var errors = options.Validate();
            if (errors.Count > 0) throw new UsageException("invalid coordinator settings:\n  " + string.Join("\n  ", errors));
            EndPoints.TryParse(options.Http, out var http);
            var builder = WebApplication.CreateSlimBuilder();
            ConfigureLogging(builder.Logging);
            builder.WebHost.ConfigureKestrel(k => k.Listen(http!));
            builder.Services.AddSingleton(options);
            builder.Services.AddSingleton<SwarmCoordinator>();
            builder.Services.AddHostedService(sp => sp.GetRequiredService<SwarmCoordinator>());
            builder.Services.AddSingleton<JobRunner>();
            builder.Services.AddSwarmTelemetry(
                TelemetrySettings.FromEnvironment("swarm-coordinator", CoordinatorInstrumentation.Name, null, options.OtlpEndpoint),
                m => m.AddPrometheusExporter());
            await using var app = builder.Build();
            var swarm = app.Services.GetRequiredService<SwarmCoordinator>();
            var jobs = app.Services.GetRequiredService<JobRunner>();
            HttpApi.Map(app, swarm, jobs);
            app.MapPrometheusScrapingEndpoint("/metrics");
            await app.RunAsync();
            return 0;
        });
        return cmd;
    }

    internal static void ConfigureLogging(ILoggingBuilder logging)
    {
        logging.ClearProviders();
        logging.AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss.fff "; });
        logging.AddFilter("Microsoft", LogLevel.Warning);
        logging.SetMinimumLevel(Environment.GetEnvironmentVariable("SWARM_LOG_LEVEL") is { } l && Enum.TryParse<LogLevel>(l, true, out var lv) ? lv : LogLevel.Information);
    }
}
