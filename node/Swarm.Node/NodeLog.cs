using Microsoft.Extensions.Logging;

namespace Swarm.Node;

/// <summary>Every log message of the node daemon and its parts, with its event id (one place, so ids stay unique).</summary>
internal static partial class NodeLog
{
    [LoggerMessage(1, LogLevel.Information, "node listening on {Endpoint}; self-benchmark {LayerTokensPerSecond:F0} layer·tokens/s")]
    public static partial void Started(this ILogger logger, string endpoint, double layerTokensPerSecond);
    [LoggerMessage(2, LogLevel.Information, "registered with coordinator {Coordinator} as node {NodeId}")]
    public static partial void Registered(this ILogger logger, int nodeId, string coordinator);
    [LoggerMessage(3, LogLevel.Warning, "coordinator {Coordinator} unreachable ({Reason}); retrying in {DelayMs} ms")]
    public static partial void CoordinatorUnreachable(this ILogger logger, string coordinator, string reason, double delayMs);
    [LoggerMessage(4, LogLevel.Warning, "lost the coordinator ({Reason}); re-registering")]
    public static partial void CoordinatorLost(this ILogger logger, string reason);
    [LoggerMessage(5, LogLevel.Information, "loaded layers {Range}: {WeightMB:F1} MB of weights in {Ms:F0} ms; KV budget {KvTokens} tokens; {Parallel}")]
    public static partial void Loaded(this ILogger logger, string range, double weightMB, double ms, long kvTokens, string parallel);
    [LoggerMessage(6, LogLevel.Error, "compute error: {Type}: {Message}")]
    public static partial void ComputeError(this ILogger logger, string type, string message);
    [LoggerMessage(7, LogLevel.Warning, "no swarm secret: accepting unauthenticated peers (loopback only)")]
    public static partial void NoSecret(this ILogger logger);
    [LoggerMessage(8, LogLevel.Critical, "{Message}")]
    public static partial void Fatal(this ILogger logger, string message);
    [LoggerMessage(9, LogLevel.Information, "draining: {Reason}")]
    public static partial void Draining(this ILogger logger, string reason);
    [LoggerMessage(10, LogLevel.Warning, "dropped unexpected {Kind} from {Peer}")]
    public static partial void Unexpected(this ILogger logger, string kind, string peer);
    [LoggerMessage(11, LogLevel.Warning, "no coordinator connection: dropped {Kind}")]
    public static partial void DroppedNoCoordinator(this ILogger logger, string kind);
    [LoggerMessage(12, LogLevel.Information, "expired {Count} idle session(s)")]
    public static partial void Expired(this ILogger logger, int count);
    [LoggerMessage(13, LogLevel.Information, "stopping; {InFlight} step(s) still in flight")]
    public static partial void Stopping(this ILogger logger, int inFlight);
    [LoggerMessage(14, LogLevel.Error, "forwarder error: {Type}: {Message}")]
    public static partial void ForwarderError(this ILogger logger, string type, string message);
    [LoggerMessage(15, LogLevel.Warning, "stopping: {Part} did not finish within {Seconds} s")]
    public static partial void StopTimedOut(this ILogger logger, string part, double seconds);
    [LoggerMessage(16, LogLevel.Information, "fetching layers {Range} from {Source}: {Tensors} tensors, verified against the coordinator's manifest")]
    public static partial void Fetching(this ILogger logger, string range, string source, int tensors);
    [LoggerMessage(17, LogLevel.Information, "fetched layers {Range} into {Directory}: {MB:F1} MB, {DownloadedMB:F1} MB downloaded, every tensor verified")]
    public static partial void Fetched(this ILogger logger, string range, string directory, double mb, double downloadedMB);
    [LoggerMessage(18, LogLevel.Information, "node identity {Fingerprint} ({What} {Path})")]
    public static partial void Identity(this ILogger logger, string fingerprint, string path, string what);
    [LoggerMessage(19, LogLevel.Warning, "could not serve tensor {Digest}… to a peer: {Reason}")]
    public static partial void ShareFailed(this ILogger logger, string digest, string reason);
    [LoggerMessage(20, LogLevel.Information, "fetching layers {Range}: asking {Peers} peer(s) first ({PeerList}), then {Source}")]
    public static partial void FetchingFromPeers(this ILogger logger, string range, int peers, string peerList, string source);
    [LoggerMessage(21, LogLevel.Information, "the swarm's model has {Layers} layers of width {Hidden}; self-benchmark {LayerTokensPerSecond:F0} layer·tokens/s")]
    public static partial void Benchmarked(this ILogger logger, int layers, int hidden, double layerTokensPerSecond);
    [LoggerMessage(22, LogLevel.Information, "moving to layers {Range}: still serving layers {Serving} while their tensors are fetched")]
    public static partial void Moving(this ILogger logger, string range, string serving);
    [LoggerMessage(23, LogLevel.Information, "node listening on {Endpoint}; no local model: it benchmarks once the coordinator names the model source")]
    public static partial void StartedWithoutModel(this ILogger logger, string endpoint);
    [LoggerMessage(24, LogLevel.Information, "reachable directly at {Endpoint}")]
    public static partial void ReachableDirectly(this ILogger logger, string endpoint);
    [LoggerMessage(25, LogLevel.Information, "behind NAT (seen as {Endpoint}): peers will punch or relay")]
    public static partial void BehindNat(this ILogger logger, string endpoint);
    [LoggerMessage(26, LogLevel.Information, "node {PeerNodeId} will connect {How}: opening this node's NAT toward {Target}")]
    public static partial void Introduced(this ILogger logger, int peerNodeId, string how, string target);
    [LoggerMessage(27, LogLevel.Information, "relaying hop {HopId} for the swarm: port {UpstreamPort} for {Upstream}, port {DownstreamPort} for {Downstream}")]
    public static partial void RelayHopOpened(this ILogger logger, long hopId, int upstreamPort, string upstream, int downstreamPort, string downstream);
    [LoggerMessage(28, LogLevel.Information, "closed relayed hop {HopId} ({Why}): {Datagrams} datagrams, {Bytes} bytes forwarded")]
    public static partial void RelayHopClosed(this ILogger logger, long hopId, string why, long datagrams, long bytes);
    [LoggerMessage(29, LogLevel.Information, "volunteering as a relay: {Decision}")]
    public static partial void RelayOffer(this ILogger logger, string decision);
    [LoggerMessage(30, LogLevel.Information, "draft model {Dir} ({Identity}, {Layers} layers, {WeightMB:F1} MB) loaded: this last stage drafts tokens for speculative decoding")]
    public static partial void DraftModelLoaded(this ILogger logger, string dir, string identity, int layers, double weightMB);
}
