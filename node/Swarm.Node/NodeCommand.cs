using System.CommandLine;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Swarm.Hosting;
using Swarm.Node.Telemetry;

namespace Swarm.Node;

/// <summary><c>swarm node</c>: the worker daemon as a Generic Host.</summary>
public static class NodeCommand
{
    public static Command Create()
    {
        var cfg = new DaemonConfig("Node");
        cfg.Flag<string>("--coordinator", "Coordinator", "Coordinator address HOST:PORT (required)");
        cfg.Flag<string>("--model", "Model", "Checkpoint folder (default: fetch the assigned layers from the coordinator's --model-url)");
        cfg.Flag<bool>("--no-share", "NoShare", "Do not serve fetched tensors to other nodes (default: share them)");
        cfg.Flag<string>("--share-rate", "ShareRate", "Upload budget for serving tensors to other nodes, per second (default 32MB)");
        cfg.Flag<string>("--draft-model", "DraftModel", "Draft model folder (same tokenizer) this node runs when it serves the last stage, for speculative decoding");
        cfg.Flag<string>("--layers", "Layers", "Pin layers A:B (half-open); default: the coordinator assigns a range");
        cfg.Flag<string>("--memory", "Memory", "Memory budget for weights + KV cache, e.g. 8GB (default 4GB)");
        cfg.Flag<int>("--tp", "Tp", "Tensor-parallel shards per layer (default 1)");
        cfg.Flag<string>("--devices", "Devices", "Device per tensor-parallel shard: cpu (default) or cuda:0,cuda:1,…");
        cfg.Flag<int>("--threads", "Threads", "CPU threads (default: all cores)");
        cfg.Flag<string>("--name", "Name", "Name shown in status");
        cfg.Flag<string>("--listen", "Listen", "Address HOST:PORT of the node's socket (default: a free port on 127.0.0.1 for a loopback coordinator, else on 0.0.0.0)");
        cfg.Flag<string>("--advertise", "Advertise", "Address other nodes use to reach this one (default: a specific --listen, else where the coordinator sees the node)");
        cfg.Flag<bool>("--relay", "Relay", "Volunteer as a relay for hops other nodes cannot punch (needs this node reachable directly; costs that traffic's bandwidth twice)");
        cfg.Flag<string>("--secret", "Secret", "Swarm secret (or SWARM_SECRET); optional on loopback only");
        cfg.Flag<string>("--identity", "Identity", "Identity file (key pair, created 0600 at first start; default $SWARM_HOME/node.identity or ~/.local/share/swarm/node.identity)");
        cfg.Flag<string>("--coordinator-key", "CoordinatorKey", "Pin the coordinator's public key (64 hex digits, from its log): refuse any other");
        cfg.Flag<string>("--dtype", "Dtype", "Compute dtype f32 (default) or bf16");
        cfg.Flag<string>("--weights", "Weights", "Weight storage f32, bf16, f16 or int8 (default: --dtype); half and int8 compute in bf16");
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
            MemoryBudget.EnsureHoldsOneLayer(options);
            var builder = Host.CreateApplicationBuilder();
            DaemonLogging.Configure(builder.Logging);
            builder.Services.AddSingleton(options);
            var listen = options.ListenEndPoint;
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
}
