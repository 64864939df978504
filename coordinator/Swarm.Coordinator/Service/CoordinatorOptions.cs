using System.Net;
using Swarm.Protocol;

namespace Swarm.Coordinator.Service;

/// <summary>Settings of <c>swarm coordinator</c>; bound from flags, SWARM_COORDINATOR__* env vars or a config file.</summary>
public sealed class CoordinatorOptions
{
    /// <summary>File name of the default identity, apart from a node's on the same machine.</summary>
    public const string DefaultIdentityFile = "coordinator.identity";

    /// <summary>Control/data address nodes connect to (default 127.0.0.1:7700).</summary>
    public string Listen { get; set; } = "127.0.0.1:7700";
    /// <summary>HTTP API address (default 127.0.0.1:8080).</summary>
    public string Http { get; set; } = "127.0.0.1:8080";
    /// <summary>Checkpoint folder: config.json (and tokenizer.json) are read; weights are not loaded here. Required.</summary>
    public string Model { get; set; } = "";
    /// <summary>Name the model is served under in /v1/models (default: the folder name).</summary>
    public string? ModelName { get; set; }
    /// <summary>Dtype of activations between stages: f16 (default) or f32.</summary>
    public string WireDtype { get; set; } = "f16";
    /// <summary>Shared swarm secret (the PSK of every node's handshake); may be omitted only when bound to loopback.</summary>
    public string? Secret { get; set; }
    /// <summary>
    /// Identity file: the coordinator's X25519 key pair, created 0600 at first start. Default
    /// <c>$SWARM_HOME/coordinator.identity</c>, else <c>~/.local/share/swarm/coordinator.identity</c>.
    /// </summary>
    public string? Identity { get; set; }
    /// <summary>Jobs generating at once (default 16); more wait in the queue.</summary>
    public int MaxConcurrentJobs { get; set; } = 16;
    /// <summary>Most queued jobs (default 256); beyond it requests get HTTP 429.</summary>
    public int MaxQueueLength { get; set; } = 256;
    /// <summary>How long a job may wait for a slot or for every layer to be covered (default 30 s).</summary>
    public TimeSpan QueueTimeout { get; set; } = TimeSpan.FromSeconds(30);
    /// <summary>Longest wait for one step's reply before the route is treated as failed (default 30 s).</summary>
    public TimeSpan StepTimeout { get; set; } = TimeSpan.FromSeconds(30);
    /// <summary>Route repairs allowed per job before it fails (default 8).</summary>
    public int MaxRecoveriesPerJob { get; set; } = 8;
    /// <summary>How often nodes send heartbeats; told to them at registration (default 500 ms).</summary>
    public TimeSpan HeartbeatInterval { get; set; } = TimeSpan.FromMilliseconds(500);
    /// <summary>Heartbeat silence after which a node is suspect (default 1.25 s).</summary>
    public TimeSpan SuspectAfter { get; set; } = TimeSpan.FromMilliseconds(1250);
    /// <summary>Heartbeat silence after which a node is confirmed dead and its layers re-covered (default 2.5 s).</summary>
    public TimeSpan DeadAfter { get; set; } = TimeSpan.FromMilliseconds(2500);
    /// <summary>OTLP endpoint for traces and metrics (e.g. http://127.0.0.1:4317); unset = no OTLP export.</summary>
    public string? OtlpEndpoint { get; set; }

    public WireDType Wire => WireDtype == "f32" ? WireDType.F32 : WireDType.F16;

    /// <summary>The identity file to load or create: <see cref="Identity"/>, or the default.</summary>
    public string IdentityPath => string.IsNullOrWhiteSpace(Identity) ? Swarm.Transport.Security.NodeIdentity.DefaultPath(DefaultIdentityFile) : Identity;

    public List<string> Validate()
    {
        var errors = new List<string>();
        if (string.IsNullOrWhiteSpace(Model)) errors.Add("--model DIR is required");
        else if (!Directory.Exists(Model)) errors.Add($"--model: folder not found: {Model}");
        bool loopback = true;
        if (!Swarm.Transport.EndPoints.TryParse(Listen, out var listen)) errors.Add($"--listen: '{Listen}' is not HOST:PORT");
        else loopback &= IPAddress.IsLoopback(listen!.Address);
        if (!Swarm.Transport.EndPoints.TryParse(Http, out var http)) errors.Add($"--http: '{Http}' is not HOST:PORT");
        else loopback &= IPAddress.IsLoopback(http!.Address);
        if (!loopback && string.IsNullOrEmpty(Secret))
            errors.Add("bound to a non-loopback address: a swarm secret is required (--secret or SWARM_SECRET)");
        if (WireDtype is not ("f16" or "f32")) errors.Add($"--wire-dtype: '{WireDtype}' (use f16 or f32)");
        if (MaxConcurrentJobs < 1) errors.Add("max concurrent jobs must be ≥ 1");
        if (MaxQueueLength < 0) errors.Add("max queue length must be ≥ 0");
        if (QueueTimeout <= TimeSpan.Zero) errors.Add("--queue-timeout must be > 0");
        if (StepTimeout <= TimeSpan.Zero) errors.Add("--step-timeout must be > 0");
        if (MaxRecoveriesPerJob < 0) errors.Add("max recoveries per job must be ≥ 0");
        if (HeartbeatInterval <= TimeSpan.Zero) errors.Add("--heartbeat-interval must be > 0");
        if (SuspectAfter <= HeartbeatInterval) errors.Add("--suspect-after must exceed --heartbeat-interval");
        if (DeadAfter <= SuspectAfter) errors.Add("--dead-after must exceed --suspect-after");
        if (OtlpEndpoint is not null && !Uri.TryCreate(OtlpEndpoint, UriKind.Absolute, out _)) errors.Add($"--otlp-endpoint: '{OtlpEndpoint}' is not a URL");
        return errors;
    }
}
