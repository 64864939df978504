using System.CommandLine;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OpenTelemetry.Metrics;
using Swarm.Coordinator.Security;
using Swarm.Coordinator.Telemetry;
using Swarm.Hosting;
using Swarm.Transport;
using Swarm.Transport.Security;

namespace Swarm.Coordinator.Service;

/// <summary><c>swarm coordinator</c>: the coordinator daemon (placement, routing, jobs, HTTP API) as a web host.</summary>
public static class CoordinatorCommand
{
    /// <summary>ASP.NET Core's meter of <c>http.server.request.duration</c> (by route, method and status code), exported on /metrics.</summary>
    public const string HttpServerMeter = "Microsoft.AspNetCore.Hosting";

    public static Command Create()
    {
        var cfg = new DaemonConfig("Coordinator");
        cfg.Flag<string>("--listen", "Listen", "Address nodes connect to, HOST:PORT (default 127.0.0.1:7700)");
        cfg.Flag<string>("--http", "Http", "HTTP API address HOST:PORT (default 127.0.0.1:8080)");
        cfg.Flag<string>("--model", "Model", "Checkpoint folder: config.json and tokenizer.json are read (this or --model-url)");
        cfg.Flag<string>("--model-url", "ModelUrl", "Repository URL (https://HOST/ORG/NAME) nodes without --model fetch their layers from");
        cfg.Flag<string>("--revision", "Revision", "Revision of --model-url: branch, tag or commit (default main)");
        cfg.Flag<string>("--model-name", "ModelName", "Name served in /v1/models (default: folder name)");
        cfg.Flag<string>("--wire-dtype", "WireDtype", "Activations between stages: f16 (default) or f32");
        cfg.Flag<string>("--secret", "Secret", "Swarm secret (or SWARM_SECRET); optional on loopback only");
        cfg.Flag<string>("--identity", "Identity", "Identity file (key pair, created 0600 at first start; default $SWARM_HOME/coordinator.identity or ~/.local/share/swarm/coordinator.identity)");
        cfg.Flag<int>("--max-concurrent-jobs", "MaxConcurrentJobs", "Jobs generating at once (default 16)");
        cfg.Flag<int>("--max-queue-length", "MaxQueueLength", "Most queued jobs (default 256); beyond it HTTP 429");
        cfg.Duration("--queue-timeout", "QueueTimeout", "How long a job waits for a slot or full coverage (default 30s)");
        cfg.Duration("--step-timeout", "StepTimeout", "Wait for one step's reply before re-routing (default 30s)");
        cfg.Flag<int>("--max-recoveries", "MaxRecoveriesPerJob", "Route repairs per job before it fails (default 8)");
        cfg.Flag<double>("--verify-rate", "VerifyRate", "Fraction of sessions spot-checked on a second replica (default 0.05; 0 = off)");
        cfg.Flag<bool>("--stream-verified-only", "StreamVerifiedOnly", "While a node on a stream's route is on probation, send only tokens "
            + "its spot checks have passed (held back until then; default: stream at once)");
        cfg.Flag<string>("--speculative", "Speculative", "Speculative decoding: none (default), ngram (prompt lookup; several tokens per pass) or draft (default with --draft-model)");
        cfg.Flag<string>("--draft-model", "DraftModel", "Draft model folder (same tokenizer): last-stage nodes started with the same draft propose tokens with it");
        cfg.Flag<int>("--speculative-max", "SpeculativeMax", "Most tokens drafted per pass (default 4; adapts between 1 and it)");
        cfg.Duration("--ban-time", "BanTime", "How long a node caught returning wrong results is refused (default 1h)");
        cfg.Duration("--heartbeat-interval", "HeartbeatInterval", "How often nodes send heartbeats (default 500ms)");
        cfg.Duration("--suspect-after", "SuspectAfter", "Heartbeat silence before a node is suspect (default 1.25s)");
        cfg.Duration("--dead-after", "DeadAfter", "Heartbeat silence before a node is confirmed dead (default 2.5s)");
        cfg.Flag<string>("--otlp-endpoint", "OtlpEndpoint", "OTLP endpoint for traces and metrics");
        cfg.ListFlag("--api-key", "ApiKeys", "Key HTTP clients send as Authorization: Bearer KEY on /v1/* and /api/* (repeatable, "
            + "or SWARM_API_KEYS=k1,k2); required when --http is not loopback", shorthandEnv: "API_KEYS");
        cfg.Flag<string>("--metrics-key", "MetricsKey", "Bearer key /metrics requires (default: /metrics is open)");
        cfg.Flag<string>("--tls-cert", "TlsCert", "PEM certificate (leaf, then intermediates) to serve HTTPS with; needs --tls-key");
        cfg.Flag<string>("--tls-key", "TlsKey", "PEM private key of --tls-cert");
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
            EndPoints.TryParse(options.Listen, out var listen);
            ListenAddressCheck.EnsureBindable(listen!, http!);
            var tls = options.UsesTls ? TlsServerCertificate.Load(options.TlsCert!, options.TlsKey!) : null;
            var published = await PublishSourceAsync(options, ct);
            using var identity = NodeIdentity.LoadOrCreate(options.IdentityPath);
            var builder = WebApplication.CreateSlimBuilder();
            DaemonLogging.Configure(builder.Logging);
            if (published is not null) builder.Services.AddSingleton(published);
            builder.WebHost.UseKestrelHttpsConfiguration();
            builder.WebHost.ConfigureKestrel(k => k.Listen(http!, l =>
            {
                if (tls is not null) l.UseHttps(tls.ToKestrelOptions());
            }));
            builder.Services.AddSingleton(options);
            builder.Services.AddSingleton(identity);
            builder.Services.AddSingleton(TimeProvider.System); // the one clock of the coordinator and its jobs
            builder.Services.AddSingleton<SwarmCoordinator>();
            builder.Services.AddHostedService(sp => sp.GetRequiredService<SwarmCoordinator>());
            builder.Services.AddSingleton<JobRunner>();
            builder.Services.AddSwarmTelemetry(
                TelemetrySettings.FromEnvironment("swarm-coordinator", CoordinatorInstrumentation.Name, null, options.OtlpEndpoint),
                m => m.AddPrometheusExporter().AddMeter(HttpServerMeter));
            await using var app = builder.Build();
            var swarm = app.Services.GetRequiredService<SwarmCoordinator>();
            var jobs = app.Services.GetRequiredService<JobRunner>();
            app.UseOpenAiErrorBodies();
            app.UseBearerKeys(HttpAccessKeys.From(options));
            HttpApi.Map(app, swarm, jobs);
            app.MapPrometheusScrapingEndpoint("/metrics").RequireMetricsKey();
            HttpSecurityLog.Report(app.Logger, options, http!, tls);
            try
            {
                await app.StartAsync();
            }
            catch (Exception e) when (ListenAddressCheck.IsAddressInUse(e))
            {
                // Taken between the check and the bind: the host has logged the details already.
                throw new CommandFailedException(e.Message);
            }
            if (r.GetValue(readyFile) is { } path) BoundEndpoints(app, swarm).Write(path);
            await app.WaitForShutdownAsync();
            return 0;
        });
        return cmd;
    }

    /// <summary>
    /// With <c>--model-url</c>: reads the source's metadata and manifest (computing it the first time) and points
    /// <see cref="CoordinatorOptions.Model"/> at the local copy of its config and tokenizer; null without it.
    /// </summary>
    private static async Task<PublishedModelSource?> PublishSourceAsync(CoordinatorOptions options, CancellationToken ct)
    {
        if (string.IsNullOrWhiteSpace(options.ModelUrl)) return null;
        var source = Swarm.Weights.ModelSource.Parse(options.ModelUrl, options.RevisionOrNull);
        try
        {
            var published = await PublishedModelSource.OpenAsync(source, new Swarm.Weights.WeightCache(), m => Console.Error.WriteLine(m), ct);
            options.Model = published.MetadataDirectory;
            options.ModelName ??= published.DefaultModelName;
            return published;
        }
        catch (Exception e) when (e is Swarm.Weights.WeightFetchException or Swarm.Model.CheckpointException)
        {
            throw new CommandFailedException($"--model-url {source.Key}: {e.Message}");
        }
    }

    /// <summary>What the started coordinator is bound to (the real ports when port 0 was asked for).</summary>
    private static CoordinatorEndpoints BoundEndpoints(WebApplication app, SwarmCoordinator swarm)
    {
        var listen = swarm.ControlEndPoint ?? throw new InvalidOperationException("the node listener is not bound");
        return new CoordinatorEndpoints(listen.ToString(), app.Urls.Single().TrimEnd('/'), PeerKey.Format(swarm.PublicKey.Span));
    }
}
