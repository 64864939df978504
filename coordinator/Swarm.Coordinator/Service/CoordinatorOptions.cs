using System.Net;
using Swarm.Protocol;

namespace Swarm.Coordinator.Service;

/// <summary>Settings of <c>swarm coordinator</c>; bound from flags, SWARM_COORDINATOR__* env vars or a config file.</summary>
internal sealed class CoordinatorOptions
{
    /// <summary>File name of the default identity, apart from a node's on the same machine.</summary>
    public const string DefaultIdentityFile = "coordinator.identity";

    /// <summary>Control/data address nodes connect to (default 127.0.0.1:7700).</summary>
    public string Listen { get; set; } = "127.0.0.1:7700";
    /// <summary>HTTP API address (default 127.0.0.1:8080).</summary>
    public string Http { get; set; } = "127.0.0.1:8080";
    /// <summary>Checkpoint folder: config.json (and tokenizer.json) are read; weights are not loaded here. This or <see cref="ModelUrl"/> is required.</summary>
    public string Model { get; set; } = "";
    /// <summary>
    /// Repository URL in the hub's layout (<c>https://HOST/ORG/NAME</c> or <c>…/resolve/REV</c>) that nodes without a
    /// local checkpoint fetch their tensors from; announced to them at registration. Default unset (serve <see cref="Model"/>).
    /// </summary>
    public string? ModelUrl { get; set; }
    /// <summary>Revision of <see cref="ModelUrl"/> (branch, tag or commit; default <c>main</c>).</summary>
    public string? Revision { get; set; }

    /// <summary><see cref="Revision"/>, with an empty value (as in a configuration file) meaning unset.</summary>
    public string? RevisionOrNull => string.IsNullOrWhiteSpace(Revision) ? null : Revision;
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
    /// <summary>Fraction of sessions spot-checked on a second replica (default 0.05; 0 = off; see <see cref="Verification.VerificationOptions"/>).</summary>
    public double VerifyRate { get; set; } = 0.05;
    /// <summary>How long a node caught by a spot check is refused, by its identity key (default 1 h).</summary>
    public TimeSpan BanTime { get; set; } = TimeSpan.FromHours(1);
    /// <summary>Streamed jobs through a node on probation send only tokens no ban can take back (default false; see <see cref="Verification.VerificationOptions.StreamVerifiedOnly"/>).</summary>
    public bool StreamVerifiedOnly { get; set; }
    /// <summary>The spot-check settings these options give.</summary>
    public Verification.VerificationOptions Verification => new() { Rate = VerifyRate, BanTime = BanTime, StreamVerifiedOnly = StreamVerifiedOnly };
    /// <summary>
    /// Speculative decoding: <c>none</c> (default; <c>draft</c> when <see cref="DraftModel"/> is set), <c>ngram</c> (prompt
    /// lookup in the coordinator) or <c>draft</c> (the draft model on the last-stage nodes).
    /// </summary>
    public string? Speculative { get; set; }
    /// <summary>
    /// A small GPT-NeoX with the model's tokenizer (<c>--draft-model DIR</c>) that last-stage nodes started with the same
    /// draft run to propose tokens; the coordinator reads only its config, tokenizer and tensor header (its identity). Default unset.
    /// </summary>
    public string? DraftModel { get; set; }
    private string? _draftIdentity;
    /// <summary>The identity of <see cref="DraftModel"/> (computed once), or empty.</summary>
    private string DraftIdentity => string.IsNullOrWhiteSpace(DraftModel) ? "" : _draftIdentity ??= Swarm.Model.DraftModelIdentity.Of(DraftModel);
    private string SpeculativeMode => string.IsNullOrWhiteSpace(Speculative) ? (string.IsNullOrWhiteSpace(DraftModel) ? "none" : "draft") : Speculative;
    /// <summary>Most tokens drafted per pass when speculating, k_max (default 4; the length adapts between 1 and it).</summary>
    public int SpeculativeMax { get; set; } = 4;
    /// <summary>The speculation settings these options give (mode none when <see cref="Speculative"/> is unknown: <see cref="Validate"/> reports it).</summary>
    public Speculation.SpeculationOptions Speculation => new()
    {
        Mode = Coordinator.Speculation.SpeculationOptions.ParseMode(SpeculativeMode) ?? Coordinator.Speculation.SpeculationMode.None,
        MaxDraft = SpeculativeMax,
        DraftModel = DraftModelProblem() is null ? DraftIdentity : "",
    };
    /// <summary>How often nodes send heartbeats; told to them at registration (default 500 ms).</summary>
    public TimeSpan HeartbeatInterval { get; set; } = TimeSpan.FromMilliseconds(500);
    /// <summary>Heartbeat silence after which a node is suspect (default 1.25 s).</summary>
    public TimeSpan SuspectAfter { get; set; } = TimeSpan.FromMilliseconds(1250);
    /// <summary>Heartbeat silence after which a node is confirmed dead and its layers re-covered (default 2.5 s).</summary>
    public TimeSpan DeadAfter { get; set; } = TimeSpan.FromMilliseconds(2500);
    /// <summary>OTLP endpoint for traces and metrics (e.g. http://127.0.0.1:4317); unset = no OTLP export.</summary>
    public string? OtlpEndpoint { get; set; }
    /// <summary>
    /// Keys HTTP clients must send as <c>Authorization: Bearer KEY</c> on <c>/v1/*</c> and <c>/api/*</c> (every endpoint but
    /// <c>/healthz</c>, the dashboard page and <c>/metrics</c>). Empty (default) = no key asked, allowed on loopback only.
    /// </summary>
    public List<string> ApiKeys { get; set; } = [];
    /// <summary>Bearer key that <c>/metrics</c> requires; unset (default) = <c>/metrics</c> is open.</summary>
    public string? MetricsKey { get; set; }
    /// <summary>PEM certificate (the leaf first, then any intermediates) to serve HTTPS with; unset (default) = plain HTTP.</summary>
    public string? TlsCert { get; set; }
    /// <summary>PEM private key of <see cref="TlsCert"/> (PKCS#8, or PKCS#1/SEC1); required with it.</summary>
    public string? TlsKey { get; set; }

    /// <summary>Shortest API or metrics key accepted: a guessable key is no protection on an open port.</summary>
    public const int MinKeyLength = 16;

    /// <summary>True when HTTPS is configured (<see cref="TlsCert"/> and <see cref="TlsKey"/> both set).</summary>
    public bool UsesTls => !string.IsNullOrEmpty(TlsCert) && !string.IsNullOrEmpty(TlsKey);

    public WireDType Wire => WireDtype == "f32" ? WireDType.F32 : WireDType.F16;

    /// <summary>The identity file to load or create: <see cref="Identity"/>, or the default.</summary>
    public string IdentityPath => string.IsNullOrWhiteSpace(Identity) ? Swarm.Transport.Security.NodeIdentity.DefaultPath(DefaultIdentityFile) : Identity;

    public List<string> Validate()
    {
        var errors = new List<string>();
        if (!string.IsNullOrWhiteSpace(ModelUrl))
        {
            if (!string.IsNullOrWhiteSpace(Model)) errors.Add("--model and --model-url exclude each other: give one");
            try { Swarm.Weights.ModelSource.Parse(ModelUrl, RevisionOrNull); }
            catch (ArgumentException e) { errors.Add($"--model-url: {e.Message}"); }
        }
        else if (RevisionOrNull is not null) errors.Add("--revision needs --model-url");
        else if (string.IsNullOrWhiteSpace(Model)) errors.Add("--model DIR or --model-url URL is required");
        else if (!Directory.Exists(Model)) errors.Add($"--model: folder not found: {Model}");
        bool loopback = true;
        if (!Swarm.Transport.EndPoints.TryParse(Listen, out var listen)) errors.Add($"--listen: '{Listen}' is not HOST:PORT");
        else loopback &= IPAddress.IsLoopback(listen!.Address);
        if (!Swarm.Transport.EndPoints.TryParse(Http, out var http)) errors.Add($"--http: '{Http}' is not HOST:PORT");
        else
        {
            loopback &= IPAddress.IsLoopback(http!.Address);
            if (!IPAddress.IsLoopback(http.Address) && ApiKeys.Count == 0)
                errors.Add($"--http {Http} is not a loopback address: an API key is required (--api-key KEY or SWARM_API_KEYS)");
        }
        if (!loopback && string.IsNullOrEmpty(Secret))
            errors.Add("bound to a non-loopback address: a swarm secret is required (--secret or SWARM_SECRET)");
        // The keys themselves never appear in a message: this one may end up in a log.
        int shortKeys = ApiKeys.Count(k => k.Length < MinKeyLength);
        if (shortKeys > 0) errors.Add($"--api-key: {shortKeys} of {ApiKeys.Count} keys are shorter than {MinKeyLength} characters (make one with `openssl rand -hex 32`)");
        if (ApiKeys.Any(k => k.Any(c => c is <= ' ' or > '~'))) errors.Add("--api-key: keys must be printable ASCII without spaces (they travel in an HTTP header)");
        if (!string.IsNullOrEmpty(MetricsKey) && (MetricsKey.Length < MinKeyLength || MetricsKey.Any(c => c is <= ' ' or > '~')))
            errors.Add($"--metrics-key: must be at least {MinKeyLength} printable ASCII characters without spaces");
        if (string.IsNullOrEmpty(TlsCert) != string.IsNullOrEmpty(TlsKey))
            errors.Add("--tls-cert FILE and --tls-key FILE go together: give both for HTTPS, or neither");
        if (WireDtype is not ("f16" or "f32")) errors.Add($"--wire-dtype: '{WireDtype}' (use f16 or f32)");
        if (MaxConcurrentJobs < 1) errors.Add("max concurrent jobs must be ≥ 1");
        if (MaxQueueLength < 0) errors.Add("max queue length must be ≥ 0");
        if (QueueTimeout <= TimeSpan.Zero) errors.Add("--queue-timeout must be > 0");
        if (StepTimeout <= TimeSpan.Zero) errors.Add("--step-timeout must be > 0");
        if (MaxRecoveriesPerJob < 0) errors.Add("max recoveries per job must be ≥ 0");
        errors.AddRange(Verification.Validate());
        if (Coordinator.Speculation.SpeculationOptions.ParseMode(SpeculativeMode) is null) errors.Add($"--speculative: '{Speculative}' (use none, ngram or draft)");
        else if (DraftModelProblem() is { } draft) errors.Add("--draft-model: " + draft);
        else errors.AddRange(Speculation.Validate().Select(e => "--speculative: " + e));
        if (HeartbeatInterval <= TimeSpan.Zero) errors.Add("--heartbeat-interval must be > 0");
        if (SuspectAfter <= HeartbeatInterval) errors.Add("--suspect-after must exceed --heartbeat-interval");
        if (DeadAfter <= SuspectAfter) errors.Add("--dead-after must exceed --suspect-after");
        if (OtlpEndpoint is not null && !Uri.TryCreate(OtlpEndpoint, UriKind.Absolute, out _)) errors.Add($"--otlp-endpoint: '{OtlpEndpoint}' is not a URL");
        return errors;
    }

    /// <summary>What is wrong with <see cref="DraftModel"/> (no checkpoint there, another vocabulary than the model's), or null.</summary>
    private string? DraftModelProblem()
    {
        if (string.IsNullOrWhiteSpace(DraftModel)) return null;
        try
        {
            var draft = Swarm.Model.ModelConfig.Load(DraftModel);
            _ = DraftIdentity;
            if (string.IsNullOrWhiteSpace(Model) || !File.Exists(Path.Combine(Model, "config.json"))) return null;
            var target = Swarm.Model.ModelConfig.Load(Model);
            return draft.VocabSize == target.VocabSize ? null
                : $"its vocabulary of {draft.VocabSize} tokens is not the model's {target.VocabSize} (a draft needs the same tokenizer)";
        }
        catch (Exception e) when (e is IOException or Swarm.Model.CheckpointException or UnauthorizedAccessException) { return e.Message; }
    }
}
