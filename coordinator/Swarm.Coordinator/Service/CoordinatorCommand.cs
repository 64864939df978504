using System.CommandLine;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OpenTelemetry.Metrics;
using Swarm.Coordinator.Telemetry;
using Swarm.Hosting;
using Swarm.Transport;
using Swarm.Transport.Security;

namespace Swarm.Coordinator.Service;

/// <summary><c>swarm coordinator</c>: the coordinator daemon (placement, routing, jobs, HTTP API) as a web host.</summary>
public static class CoordinatorCommand
{
    public static Command Create()
    {
        var cfg = new DaemonConfig("Coordinator");
        cfg.Flag<string>("--listen", "Listen", "Address nodes connect to, HOST:PORT (default 127.0.0.1:7700)");
        cfg.Flag<string>("--http", "Http", "HTTP API address HOST:PORT (default 127.0.0.1:8080)");
        cfg.Flag<string>("--model", "Model", "Checkpoint folder: config.json and tokenizer.json are read (required)");
        cfg.Flag<string>("--model-name", "ModelName", "Name served in /v1/models (default: folder name)");
        cfg.Flag<string>("--wire-dtype", "WireDtype", "Activations between stages: f16 (default) or f32");
        cfg.Flag<string>("--secret", "Secret", "Swarm secret (or SWARM_SECRET); optional on loopback only");
        cfg.Flag<string>("--identity", "Identity", "Identity file (key pair, created 0600 at first start; default $SWARM_HOME/coordinator.identity or ~/.local/share/swarm/coordinator.identity)");
        cfg.Flag<int>("--max-concurrent-jobs", "MaxConcurrentJobs", "Jobs generating at once (default 16)");
        cfg.Flag<int>("--max-queue-length", "MaxQueueLength", "Most queued jobs (default 256); beyond it HTTP 429");
        cfg.Duration("--queue-timeout", "QueueTimeout", "How long a job waits for a slot or full coverage (default 30s)");
        cfg.Duration("--step-timeout", "StepTimeout", "Wait for one step's reply before re-routing (default 30s)");
        cfg.Flag<int>("--max-recoveries", "MaxRecoveriesPerJob", "Route repairs per job before it fails (default 8)");
        cfg.Duration("--heartbeat-interval", "HeartbeatInterval", "How often nodes send heartbeats (default 500ms)");
        cfg.Duration("--suspect-after", "SuspectAfter", "Heartbeat silence before a node is suspect (default 1.25s)");
        cfg.Duration("--dead-after", "DeadAfter", "Heartbeat silence before a node is confirmed dead (default 2.5s)");
        cfg.Flag<string>("--otlp-endpoint", "OtlpEndpoint", "OTLP endpoint for traces and metrics");
        // A launcher's concern, not a setting of the swarm: a flag only, not in the configuration file.
        var readyFile = new Option<string?>("--ready-file")
        {
            Description = "Once the node listener and the HTTP API are bound, write their addresses to this file as JSON "
                + "{\"listen\":\"HOST:PORT\",\"http\":\"http://HOST:PORT\",\"key\":\"HEX\"} (for --listen/--http with port 0; key = what nodes pin)",
        };
        var cmd = new Command("coordinator", "Run the coordinator: placement, routing, jobs, HTTP API");
        cfg.AddTo(cmd);
        cmd.Options.Add(readyFile);
        cmd.SetAction(async (r, ct) =>
        {
            var options = cfg.Bind<CoordinatorOptions>(r);
            var errors = options.Validate();
            if (errors.Count > 0) throw new UsageException("invalid coordinator settings:\n  " + string.Join("\n  ", errors));
            EndPoints.TryParse(options.Http, out var http);
            using var identity = NodeIdentity.LoadOrCreate(options.IdentityPath);
            var builder = WebApplication.CreateSlimBuilder();
            DaemonLogging.Configure(builder.Logging);
            builder.WebHost.ConfigureKestrel(k => k.Listen(http!));
            builder.Services.AddSingleton(options);
            builder.Services.AddSingleton(identity);
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
            await app.StartAsync();
            if (r.GetValue(readyFile) is { } path) BoundEndpoints(app, swarm).Write(path);
            await app.WaitForShutdownAsync();
            return 0;
        });
        return cmd;
    }

    /// <summary>What the started coordinator is bound to (the real ports when port 0 was asked for).</summary>
    private static CoordinatorEndpoints BoundEndpoints(WebApplication app, SwarmCoordinator swarm)
    {
        var listen = swarm.ControlEndPoint ?? throw new InvalidOperationException("the node listener is not bound");
        return new CoordinatorEndpoints(listen.ToString(), app.Urls.Single().TrimEnd('/'), PeerKey.Format(swarm.PublicKey.Span));
    }
}
