using System.Net;
using Swarm.Model;
using Swarm.Protocol;

namespace Swarm.Node;

/// <summary>Settings of a worker node (<c>swarm node</c>); bound from flags, SWARM_NODE__* env vars or a config file.</summary>
public sealed class NodeOptions
{
    /// <summary>File name of the default identity, apart from a coordinator's on the same machine.</summary>
    public const string DefaultIdentityFile = "node.identity";

    /// <summary>Coordinator control address, host:port. Required.</summary>
    public string Coordinator { get; set; } = "";
    /// <summary>
    /// Checkpoint folder (HF layout). Default unset: the node fetches the tensors of the range it is assigned from the
    /// model source the coordinator announces (a coordinator started with <c>--model-url</c>).
    /// </summary>
    public string Model { get; set; } = "";
    /// <summary>Pinned layer range "A:B" (half-open); null lets the coordinator choose.</summary>
    public string? Layers { get; set; }
    /// <summary>Memory budget for weights + KV cache, e.g. "8GB" (default: 4GB).</summary>
    public string Memory { get; set; } = "4GB";
    /// <summary>CPU threads for compute (default 0 = all cores).</summary>
    public int Threads { get; set; }
    /// <summary>Node name shown in status (default: host name + port).</summary>
    public string? Name { get; set; }
    /// <summary>
    /// Address this node listens on (one UDP socket for the coordinator and node-to-node traffic), host:port. Default
    /// unset: any free port on 127.0.0.1 when the coordinator is on loopback, else on every address (0.0.0.0), so the
    /// node reaches a coordinator elsewhere through whatever route and NAT the machine has.
    /// </summary>
    public string? Listen { get; set; }
    /// <summary>
    /// Address other nodes should use to reach this one (a forwarded port, a container's published port). Default unset:
    /// the listen address when it is a specific one, else the address the coordinator sees the node at (after any NAT).
    /// </summary>
    public string? Advertise { get; set; }
    /// <summary>Shared swarm secret (the PSK of every handshake); may be omitted only on loopback.</summary>
    public string? Secret { get; set; }
    /// <summary>
    /// Identity file: this node's X25519 key pair, created 0600 at first start. Default
    /// <c>$SWARM_HOME/node.identity</c>, else <c>~/.local/share/swarm/node.identity</c>. Two nodes on one machine need two files.
    /// </summary>
    public string? Identity { get; set; }
    /// <summary>
    /// The coordinator's public key (64 hex digits, logged by the coordinator at start): the node refuses a coordinator
    /// that cannot prove it. Unset: any coordinator that completes the handshake (with the swarm secret, if any) is accepted.
    /// </summary>
    public string? CoordinatorKey { get; set; }
    /// <summary>Compute dtype: f32 (default) or bf16 — the same as <see cref="Weights"/> f32 or bf16, which wins when set.</summary>
    public string Dtype { get; set; } = "f32";
    /// <summary>How layers are stored: f32, bf16, f16 or int8 (default, or empty: <see cref="Dtype"/>).</summary>
    public string? Weights { get; set; }

    /// <summary>The weight format <see cref="Weights"/> (or else <see cref="Dtype"/>) names; F32 when neither parses.</summary>
    public WeightFormat WeightFormat => WeightFormats.TryParse(string.IsNullOrWhiteSpace(Weights) ? Dtype : Weights) ?? WeightFormat.F32;
    /// <summary>Tensor-parallel shards per layer (default 1).</summary>
    public int Tp { get; set; } = 1;
    /// <summary>Device of each tensor-parallel shard: "cpu" (default, all shards) or a comma list such as "cuda:0,cuda:1".</summary>
    public string? Devices { get; set; }
    /// <summary>Sessions idle longer than this are freed (default 300 s).</summary>
    public double SessionTtlSeconds { get; set; } = 300;
    /// <summary>Adds this many milliseconds before each step's output leaves the node, to emulate a WAN hop
    /// on loopback (tests, demos). Default 0.</summary>
    public int SimulateLatencyMs { get; set; }
    /// <summary>
    /// An injected fault, a test hook: <c>corrupt:P</c> or <c>token:P</c> (see <see cref="Verification.StepFault"/>), read from
    /// the <c>SWARM_FAULT</c> environment variable only (never from configuration). Default none (an honest node).
    /// </summary>
    public string? FaultSpec { get; } = Environment.GetEnvironmentVariable(Verification.StepFault.Variable);
    private Verification.StepFault? _fault;
    /// <summary>The parsed <see cref="FaultSpec"/> (one instance, so its draws form one sequence), or null.</summary>
    public Verification.StepFault? Fault => _fault ??= Verification.StepFault.Parse(FaultSpec);
    /// <summary>Optional port for Prometheus /metrics on this node (0 = off).</summary>
    public int MetricsPort { get; set; }
    /// <summary>
    /// True: this node does not serve the tensors it fetched to other nodes (<c>--no-share</c>). Default false: a node
    /// that fetched its layers serves them to joining nodes, within <see cref="ShareRate"/>.
    /// </summary>
    public bool NoShare { get; set; }
    /// <summary>Upload budget for serving tensors to other nodes, per second, e.g. "32MB" (the default).</summary>
    public string ShareRate { get; set; } = "32MB";
    /// <summary>
    /// True: this node volunteers as a relay (<c>--relay</c>) — when it is reachable directly, the coordinator may relay
    /// hops between other nodes whose punching failed through it (two UDP ports per hop, opaque encrypted datagrams; it
    /// costs the node that hop's traffic twice, in and out). Default false.
    /// </summary>
    public bool Relay { get; set; }
    /// <summary>
    /// A small GPT-NeoX with the target's tokenizer (<c>--draft-model DIR</c>) that this node runs whole whenever it serves
    /// the last stage, drafting tokens for speculative decoding there (see <c>DraftModelRunner</c>); it announces the
    /// draft's identity, and the coordinator uses it when started with the same draft. Default unset: none.
    /// </summary>
    public string? DraftModel { get; set; }
    /// <summary>OTLP collector for this node's traces and metrics (e.g. http://127.0.0.1:4317; port 4318 means OTLP/HTTP); unset = off.</summary>
    public string? OtlpEndpoint { get; set; }

    public long MemoryBytes => ParseBytes(Memory) ?? 0;

    /// <summary><see cref="ShareRate"/> in bytes per second (0 when it does not parse).</summary>
    public long ShareBytesPerSecond => ParseBytes(ShareRate) ?? 0;

    /// <summary>True when the node serves fetched tensors to peers: it fetches its weights and was not started with --no-share.</summary>
    public bool SharesWeights => FetchesWeights && !NoShare;

    /// <summary>
    /// Where the node's socket binds: <see cref="Listen"/>, or by default port 0 on 127.0.0.1 when the coordinator is on
    /// loopback and on the wildcard address of the coordinator's family otherwise. Null when an address does not parse.
    /// </summary>
    public IPEndPoint? ListenEndPoint
    {
        get
        {
            if (!string.IsNullOrWhiteSpace(Listen)) return TryParseEndPoint(Listen, out var given) ? given : null;
            if (!TryParseEndPoint(Coordinator, out var coordinator)) return null;
            if (IPAddress.IsLoopback(coordinator!.Address)) return new IPEndPoint(coordinator.Address, 0);
            return new IPEndPoint(coordinator.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0);
        }
    }

    /// <summary>True when the node has no local checkpoint and fetches its layers from the swarm's model source.</summary>
    public bool FetchesWeights => string.IsNullOrWhiteSpace(Model);

    /// <summary>The identity file to load or create: <see cref="Identity"/>, or the default.</summary>
    public string IdentityPath => string.IsNullOrWhiteSpace(Identity) ? Swarm.Transport.Security.NodeIdentity.DefaultPath(DefaultIdentityFile) : Identity;

    /// <summary>The pinned coordinator key (<see cref="CoordinatorKey"/>) as bytes; empty when unset or invalid.</summary>
    public ReadOnlyMemory<byte> PinnedCoordinatorKey =>
        Swarm.Transport.Security.PeerKey.TryParse(CoordinatorKey, out var key, out _) ? key : ReadOnlyMemory<byte>.Empty;

    /// <summary>
    /// The compute device of each tensor-parallel shard, comma-separated, as this node announces it to the coordinator:
    /// "cpu" for one CPU shard, "cpu,cpu" for --tp 2, "cuda:0,cuda:1" for --tp 2 --devices cuda:0,cuda:1 (one device
    /// given for several shards is repeated; "cuda" means "cuda:0"). Needs no libtorch.
    /// </summary>
    public string DeviceList
    {
        get
        {
            int shards = Math.Max(1, Tp);
            var names = string.IsNullOrWhiteSpace(Devices)
                ? ["cpu"]
                : Devices.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                    .Select(d => d.ToLowerInvariant() == "cuda" ? "cuda:0" : d.ToLowerInvariant()).ToArray();
            if (names.Length == 1 && shards > 1) names = Enumerable.Repeat(names[0], shards).ToArray();
            return string.Join(",", names);
        }
    }

    /// <summary>The tensor-parallel settings from <see cref="Tp"/> and <see cref="Devices"/> (throws ArgumentException when invalid).</summary>
    public TensorParallelOptions TensorParallel() => TensorParallelOptions.Parse(Tp, Devices);

    /// <summary>Every problem at once, or an empty list.</summary>
    public List<string> Validate()
    {
        var errors = new List<string>();
        if (string.IsNullOrWhiteSpace(Coordinator)) errors.Add("--coordinator HOST:PORT is required");
        else if (!TryParseEndPoint(Coordinator, out _)) errors.Add($"--coordinator: '{Coordinator}' is not HOST:PORT");
        if (!string.IsNullOrWhiteSpace(Model) && !Directory.Exists(Model)) errors.Add($"--model: folder not found: {Model}");
        if (!string.IsNullOrWhiteSpace(DraftModel)) errors.AddRange(DraftModelProblems());
        if (Layers is not null && !LayerRange.TryParse(Layers, out _)) errors.Add($"--layers: '{Layers}' is not A:B with 0 ≤ A < B");
        if (ParseBytes(Memory) is not > 0) errors.Add($"--memory: '{Memory}' is not a size like 8GB or 512MB");
        if (ParseBytes(ShareRate) is not > 0) errors.Add($"--share-rate: '{ShareRate}' is not a size per second like 32MB");
        if (Threads < 0) errors.Add("--threads must be ≥ 0");
        if (Tp < 1) errors.Add("--tp must be ≥ 1");
        else
        {
            try
            {
                var tp = TensorParallel();
                // Heads and intermediate size come from the checkpoint: checked here so that a bad split fails at start.
                if (!string.IsNullOrWhiteSpace(Model) && File.Exists(Path.Combine(Model, "config.json")))
                    tp.Validate(ModelConfig.Load(Model));
            }
            catch (ArgumentException e) { errors.Add(e.Message); }
            catch (CheckpointException) { } // reported when the node opens the checkpoint
        }
        if (!string.IsNullOrWhiteSpace(Listen) && !TryParseEndPoint(Listen, out _)) errors.Add($"--listen: '{Listen}' is not HOST:PORT");
        else if (ListenEndPoint is { } listen && string.IsNullOrEmpty(Secret) && !IPAddress.IsLoopback(listen.Address))
            errors.Add($"listening on {listen} (not loopback) needs a swarm secret (--secret or SWARM_SECRET)");
        if (!string.IsNullOrWhiteSpace(CoordinatorKey) && !Swarm.Transport.Security.PeerKey.TryParse(CoordinatorKey, out _, out var keyError))
            errors.Add($"--coordinator-key: {keyError}");
        if (Dtype is not ("f32" or "bf16")) errors.Add($"--dtype: '{Dtype}' (use f32 or bf16)");
        if (!string.IsNullOrWhiteSpace(Weights) && WeightFormats.TryParse(Weights) is null) errors.Add($"--weights: '{Weights}' (use f32, bf16, f16 or int8)");
        if (SessionTtlSeconds <= 0) errors.Add("session TTL must be > 0");
        if (MetricsPort is < 0 or > 65535) errors.Add("--metrics port out of range");
        if (!string.IsNullOrEmpty(OtlpEndpoint) && !Uri.TryCreate(OtlpEndpoint, UriKind.Absolute, out _)) errors.Add($"--otlp-endpoint: '{OtlpEndpoint}' is not a URL");
        if (SimulateLatencyMs is < 0 or > 60000) errors.Add("--simulate-latency-ms must be between 0 and 60000");
        try { _ = Fault; }
        catch (FormatException e) { errors.Add(e.Message); }
        return errors;
    }

    /// <summary>What is wrong with <see cref="DraftModel"/>: no checkpoint there, or a vocabulary other than the model's.</summary>
    private IEnumerable<string> DraftModelProblems()
    {
        if (!File.Exists(Path.Combine(DraftModel!, "config.json"))) return [$"--draft-model: no config.json in {DraftModel}"];
        try
        {
            var draft = ModelConfig.Load(DraftModel!);
            if (string.IsNullOrWhiteSpace(Model) || !File.Exists(Path.Combine(Model, "config.json"))) return [];
            var target = ModelConfig.Load(Model);
            return draft.VocabSize == target.VocabSize ? []
                : [$"--draft-model: its vocabulary of {draft.VocabSize} tokens is not the model's {target.VocabSize} (a draft needs the same tokenizer)"];
        }
        catch (CheckpointException e) { return [$"--draft-model: {e.Message}"]; }
    }

    /// <summary>Parses "8GB", "512MB", "1.5G", "1073741824".</summary>
    public static long? ParseBytes(string text)
    {
        text = text.Trim().ToUpperInvariant().Replace("IB", "B");
        (string num, long mult) = text switch
        {
            _ when text.EndsWith("TB") || text.EndsWith('T') => (text.TrimEnd('B').TrimEnd('T'), 1L << 40),
            _ when text.EndsWith("GB") || text.EndsWith('G') => (text.TrimEnd('B').TrimEnd('G'), 1L << 30),
            _ when text.EndsWith("MB") || text.EndsWith('M') => (text.TrimEnd('B').TrimEnd('M'), 1L << 20),
            _ when text.EndsWith("KB") || text.EndsWith('K') => (text.TrimEnd('B').TrimEnd('K'), 1L << 10),
            _ => (text.TrimEnd('B'), 1L),
        };
        return double.TryParse(num, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v) && v > 0
            ? (long)(v * mult) : null;
    }

    public static bool TryParseEndPoint(string text, out IPEndPoint? endPoint) => Swarm.Transport.EndPoints.TryParse(text, out endPoint);
}
