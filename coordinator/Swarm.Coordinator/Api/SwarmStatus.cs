using System.Text.Json;
using System.Text.Json.Serialization;
using Swarm.Coordinator.Membership;
using Swarm.Protocol;

namespace Swarm.Coordinator.Api;

/// <summary>
/// The swarm at one moment, as served by <c>GET /api/swarm</c> and read by <c>swarm status</c> and the
/// web dashboard. The JSON names (snake_case) are the contract; add fields, never rename or remove them.
/// </summary>
internal sealed record SwarmStatus
{
    /// <summary>Model name, e.g. <c>pythia-160m</c>.</summary>
    [JsonPropertyName("model")] public required string Model { get; init; }

    /// <summary>Transformer layers in the model.</summary>
    [JsonPropertyName("num_layers")] public required int NumLayers { get; init; }

    /// <summary>True when every layer is held by at least one serving node.</summary>
    [JsonPropertyName("covered")] public required bool Covered { get; init; }

    /// <summary>Replicas per layer (index = layer); <see cref="NumLayers"/> entries.</summary>
    [JsonPropertyName("coverage")] public required IReadOnlyList<int> Coverage { get; init; }

    /// <summary>The layers no node serves, worded for people (<c>"layers 4-7, layer 9"</c>); null when covered.</summary>
    [JsonPropertyName("uncovered")] public string? Uncovered { get; init; }

    /// <summary>Known nodes, including suspect, dead and departed ones still reported.</summary>
    [JsonPropertyName("nodes")] public required IReadOnlyList<SwarmNodeStatus> Nodes { get; init; }

    /// <summary>Job counters and the most recent jobs.</summary>
    [JsonPropertyName("jobs")] public required SwarmJobsStatus Jobs { get; init; }

    /// <summary>
    /// The links jobs travel over: each live node's to the coordinator, and each node-to-node link a node measured
    /// to the next hops it handed steps to (reported in heartbeats; routing costs hops by them).
    /// </summary>
    [JsonPropertyName("links")] public IReadOnlyList<SwarmLinkStatus> Links { get; init; } = [];

    /// <summary>What the coordinator's own relay carried since start (hops relayed through it when no volunteer relay could); null when it has none.</summary>
    [JsonPropertyName("relay")] public SwarmRelayStatus? Relay { get; init; }

    /// <summary>Jobs whose route was repaired after a node failed, since start.</summary>
    [JsonPropertyName("recoveries")] public long Recoveries { get; init; }

    /// <summary>Seconds since the coordinator started.</summary>
    [JsonPropertyName("uptime_s")] public double UptimeS { get; init; }

    /// <summary>Dtype of activations between stages: <c>f16</c> or <c>f32</c>.</summary>
    [JsonPropertyName("wire_dtype")] public required string WireDtype { get; init; }

    /// <summary>
    /// Words the zero entries of <paramref name="coverage"/> as <see cref="Uncovered"/> expects:
    /// <c>"layers 4-7"</c>, <c>"layer 9"</c>, comma-separated; null when every layer has a replica.
    /// </summary>
    public static string? DescribeUncovered(IReadOnlyList<int> coverage)
    {
        ArgumentNullException.ThrowIfNull(coverage);
        var gaps = LayerRange.FromMask(coverage.Count, l => coverage[l] <= 0);
        return gaps.Count == 0 ? null : LayerRange.DescribeAll(gaps);
    }

    /// <summary>Serializes to the contract's JSON (compact).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, SwarmStatusJson.Default.SwarmStatus);

    /// <summary>Parses the contract's JSON.</summary>
    /// <exception cref="JsonException">The text is not JSON or lacks a required field.</exception>
    public static SwarmStatus FromJson(string json) =>
        JsonSerializer.Deserialize(json, SwarmStatusJson.Default.SwarmStatus)
        ?? throw new JsonException("expected a swarm status object, got null");
}

/// <summary>A node's spot-check record in <see cref="SwarmNodeStatus.Checks"/>.</summary>
internal sealed record SwarmNodeChecks
{
    /// <summary>Spot checks passed.</summary>
    [JsonPropertyName("passed")] public int Passed { get; init; }

    /// <summary>Spot checks failed (the node disagreed with the majority of the replicas that ran the same step).</summary>
    [JsonPropertyName("failed")] public int Failed { get; init; }

    /// <summary>
    /// True while the node is on probation: it has not yet passed enough checks (a newcomer, or after a failed one), so
    /// its sessions are checked at ten times the base rate and <c>--stream-verified-only</c> holds back its tokens.
    /// </summary>
    [JsonPropertyName("probation")] public bool Probation { get; init; }
}

/// <summary>One node in <see cref="SwarmStatus.Nodes"/>.</summary>
internal sealed record SwarmNodeStatus
{
    /// <summary>Numeric id the coordinator gave the node (stable for the node's lifetime).</summary>
    [JsonPropertyName("id")] public required int Id { get; init; }

    /// <summary>Operator-chosen display name (<c>--name</c>).</summary>
    [JsonPropertyName("name")] public required string Name { get; init; }

    /// <summary>Address peers use to reach the node, <c>host:port</c>.</summary>
    [JsonPropertyName("address")] public required string Address { get; init; }

    /// <summary>Fingerprint of the public key the node proved (<c>swarm:…</c>): its identity. Null only without encryption.</summary>
    [JsonPropertyName("key")] public string? Key { get; init; }

    /// <summary>
    /// The fingerprint this node's name was first seen with, when the node now proves another key (another machine
    /// uses the name, or the node has a new identity file); null when name and key agree.
    /// </summary>
    [JsonPropertyName("key_changed_from")] public string? KeyChangedFrom { get; init; }

    /// <summary>The layer range held or being loaded as <c>[start, end)</c> (two numbers); null while it holds none.</summary>
    [JsonPropertyName("layers")] public IReadOnlyList<int>? Layers { get; init; }

    /// <summary>Operator-facing state (lowercase in JSON: <c>joining</c>, <c>loading</c>, <c>serving</c>, …).</summary>
    [JsonPropertyName("state")]
    [JsonConverter(typeof(SnakeCaseEnumConverter<NodeStatus>))]
    public required NodeStatus State { get; init; }

    /// <summary>Jobs currently routed through the node.</summary>
    [JsonPropertyName("in_flight")] public int InFlight { get; init; }

    /// <summary>Device, e.g. <c>cpu</c> or <c>cuda:0</c>.</summary>
    [JsonPropertyName("device")] public required string Device { get; init; }

    /// <summary>Compute threads the node uses.</summary>
    [JsonPropertyName("threads")] public int Threads { get; init; }

    /// <summary>Measured decode throughput of the node's stage, tokens per second (0 until measured).</summary>
    [JsonPropertyName("tokens_per_s")] public double TokensPerS { get; init; }

    /// <summary>KV-cache token slots in use across the node's sessions.</summary>
    [JsonPropertyName("kv_tokens_used")] public long KvTokensUsed { get; init; }

    /// <summary>KV-cache token slots the node can hold.</summary>
    [JsonPropertyName("kv_tokens_capacity")] public long KvTokensCapacity { get; init; }

    /// <summary>Open generation sessions on the node.</summary>
    [JsonPropertyName("sessions")] public int Sessions { get; init; }

    /// <summary>Paged KV-cache blocks held by the node's sessions.</summary>
    [JsonPropertyName("kv_blocks_used")] public int KvBlocksUsed { get; init; }

    /// <summary>Paged KV-cache blocks in the node's pool.</summary>
    [JsonPropertyName("kv_blocks_total")] public int KvBlocksTotal { get; init; }

    /// <summary>New sessions queued on the node until KV blocks free up.</summary>
    [JsonPropertyName("waiting_sessions")] public int WaitingSessions { get; init; }

    /// <summary>Milliseconds since the last heartbeat (or registration) arrived.</summary>
    [JsonPropertyName("last_heartbeat_ms_ago")] public long LastHeartbeatMsAgo { get; init; }

    /// <summary>Spot checks the node passed and failed (its reputation).</summary>
    [JsonPropertyName("checks")] public SwarmNodeChecks Checks { get; init; } = new();

    /// <summary>What the node relayed for others when it is a volunteer relay (<c>--relay</c>, accepted); null otherwise.</summary>
    [JsonPropertyName("relay")] public SwarmRelayStatus? Relay { get; init; }

    /// <summary>The contract's <c>[start, end)</c> pair for <paramref name="range"/>; null for null.</summary>
    public static IReadOnlyList<int>? LayersOf(LayerRange? range) => range is LayerRange r ? [r.Start, r.End] : null;

    /// <summary><see cref="Layers"/> as a <see cref="LayerRange"/>; null when absent or malformed.</summary>
    [JsonIgnore]
    public LayerRange? Range => Layers is [var start, var end] && start >= 0 && end > start ? new LayerRange(start, end) : null;

    /// <summary>The range in the CLI's notation (<c>0:6</c>), or <c>-</c> when the node holds none.</summary>
    [JsonIgnore]
    public string RangeText => Range?.ToCliNotation() ?? "-";
}

/// <summary>One link in <see cref="SwarmStatus.Links"/>.</summary>
internal sealed record SwarmLinkStatus
{
    /// <summary>The name of the node the link starts at.</summary>
    [JsonPropertyName("from")] public required string From { get; init; }

    /// <summary>The name of the node at the other end, or <c>coordinator</c>.</summary>
    [JsonPropertyName("to")] public required string To { get; init; }

    /// <summary>How the packets travel: <c>direct</c>, <c>punched</c> or <c>relayed</c>.</summary>
    [JsonPropertyName("path")]
    [JsonConverter(typeof(SnakeCaseEnumConverter<HopPath>))]
    public required HopPath Path { get; init; }

    /// <summary>Round-trip time in milliseconds; null when not measured yet.</summary>
    [JsonPropertyName("rtt_ms")] public double? RttMs { get; init; }

    /// <summary>Who relays a relayed link: a volunteer node's name or <c>coordinator</c>; null for other paths (or when not known).</summary>
    [JsonPropertyName("via")] public string? Via { get; init; }
}

/// <summary>What a relay carried: <see cref="SwarmStatus.Relay"/> (the coordinator's) and <see cref="SwarmNodeStatus.Relay"/> (a volunteer's).</summary>
internal sealed record SwarmRelayStatus
{
    /// <summary>Relayed hops open now.</summary>
    [JsonPropertyName("hops")] public int Hops { get; init; }

    /// <summary>Datagrams forwarded since start, both directions.</summary>
    [JsonPropertyName("datagrams")] public long Datagrams { get; init; }

    /// <summary>Bytes forwarded since start, both directions.</summary>
    [JsonPropertyName("bytes")] public long Bytes { get; init; }

    /// <summary>The status of <paramref name="usage"/>; null for null.</summary>
    public static SwarmRelayStatus? From(Protocol.RelayUsage? usage) =>
        usage is null ? null : new SwarmRelayStatus { Hops = usage.Hops, Datagrams = usage.Datagrams, Bytes = usage.Bytes };
}

/// <summary>Job counters of <see cref="SwarmStatus.Jobs"/>.</summary>
internal sealed record SwarmJobsStatus
{
    /// <summary>Jobs waiting for admission.</summary>
    [JsonPropertyName("queued")] public int Queued { get; init; }

    /// <summary>Jobs generating now.</summary>
    [JsonPropertyName("running")] public int Running { get; init; }

    /// <summary>Jobs finished successfully since start.</summary>
    [JsonPropertyName("completed")] public long Completed { get; init; }

    /// <summary>Admitted jobs that failed since start (not those whose client went away: <see cref="Cancelled"/>).</summary>
    [JsonPropertyName("failed")] public long Failed { get; init; }

    /// <summary>Jobs whose client went away (while queued or running) since start.</summary>
    [JsonPropertyName("cancelled")] public long Cancelled { get; init; }

    /// <summary>Jobs refused at admission (queue full, or the queue timeout passed) since start; they are not listed in <see cref="Recent"/>.</summary>
    [JsonPropertyName("rejected")] public long Rejected { get; init; }

    /// <summary>The most recent jobs, newest first (the coordinator keeps a bounded number).</summary>
    [JsonPropertyName("recent")] public IReadOnlyList<SwarmJobStatus> Recent { get; init; } = [];
}

/// <summary>Where a job is, as shown to operators.</summary>
internal enum SwarmJobState
{
    /// <summary>Waiting for admission.</summary>
    Queued,
    /// <summary>Generating.</summary>
    Running,
    /// <summary>Finished (length or stop).</summary>
    Done,
    /// <summary>Ended with an error (see <see cref="SwarmJobStatus.Error"/>).</summary>
    Failed,
    /// <summary>Ended because its client went away.</summary>
    Cancelled,
}

/// <summary>One recent job in <see cref="SwarmJobsStatus.Recent"/>.</summary>
internal sealed record SwarmJobStatus
{
    /// <summary>Job id, e.g. <c>cmpl-…</c>.</summary>
    [JsonPropertyName("id")] public required string Id { get; init; }

    /// <summary>State (lowercase in JSON: <c>queued</c>, <c>running</c>, <c>done</c>, <c>failed</c>, <c>cancelled</c>).</summary>
    [JsonPropertyName("state")]
    [JsonConverter(typeof(SnakeCaseEnumConverter<SwarmJobState>))]
    public required SwarmJobState State { get; init; }

    /// <summary>Tokens in the prompt.</summary>
    [JsonPropertyName("prompt_tokens")] public int PromptTokens { get; init; }

    /// <summary>Tokens generated (so far, while running).</summary>
    [JsonPropertyName("completion_tokens")] public int CompletionTokens { get; init; }

    /// <summary>Time to first token in milliseconds (shown as soon as it is known); null before the first token.</summary>
    [JsonPropertyName("ttft_ms")] public double? TtftMs { get; init; }

    /// <summary>Decode rate in tokens per second, between the first and the latest token; null before the second token.</summary>
    [JsonPropertyName("tokens_per_s")] public double? TokensPerS { get; init; }

    /// <summary>Times the job's route was repaired after a node failure.</summary>
    [JsonPropertyName("recoveries")] public int Recoveries { get; init; }

    /// <summary>Why the job failed or was cancelled; null otherwise.</summary>
    [JsonPropertyName("error")] public string? Error { get; init; }

    /// <summary>Seconds since the job finished; null while queued or running.</summary>
    [JsonPropertyName("finished_ago_s")] public double? FinishedAgoS { get; init; }
}

/// <summary>Writes and reads an enum as snake_case strings (<c>Serving</c> ↔ <c>"serving"</c>); numbers are refused.</summary>
/// <typeparam name="TEnum">The enum.</typeparam>
internal sealed class SnakeCaseEnumConverter<TEnum> : JsonStringEnumConverter<TEnum> where TEnum : struct, Enum
{
    /// <summary>Creates the converter.</summary>
    public SnakeCaseEnumConverter() : base(JsonNamingPolicy.SnakeCaseLower, allowIntegerValues: false) { }
}

/// <summary>Source-generated serializers for <see cref="SwarmStatus"/> (names come from the attributes).</summary>
[JsonSourceGenerationOptions(WriteIndented = false, NumberHandling = JsonNumberHandling.Strict)]
[JsonSerializable(typeof(SwarmStatus))]
internal sealed partial class SwarmStatusJson : JsonSerializerContext;
