using Microsoft.Extensions.Logging;

namespace Swarm.Coordinator.Service;

/// <summary>The coordinator's log messages (event ids 100–199).</summary>
internal sealed partial class SwarmCoordinator
{
    [LoggerMessage(100, LogLevel.Information, "coordinator listening on {Endpoint} for nodes; model {Model} ({Layers} layers)")]
    private partial void LogListening(string endpoint, string model, int layers);
    [LoggerMessage(101, LogLevel.Warning, "no swarm secret: accepting unauthenticated nodes (loopback only)")]
    private partial void LogNoSecret();
    [LoggerMessage(102, LogLevel.Information, "node {Name} (id {Id}, {Endpoint}, {Key}) joined: {What}")]
    private partial void LogJoined(string name, int id, string endpoint, string key, string what);
    [LoggerMessage(103, LogLevel.Warning, "refused node at {Peer}: {Reason}")]
    private partial void LogRefused(string peer, string reason);
    [LoggerMessage(104, LogLevel.Information, "node {Id} serving layers {Range} (KV capacity {KvTokens} tokens)")]
    private partial void LogServing(int id, string range, long kvTokens);
    [LoggerMessage(105, LogLevel.Information, "node {Id} is leaving: {Reason}")]
    private partial void LogLeaving(int id, string reason);
    [LoggerMessage(106, LogLevel.Warning, "node {Id} disconnected: {Reason}")]
    private partial void LogDisconnected(int id, string reason);
    [LoggerMessage(107, LogLevel.Warning, "node {Id} ({Name}) confirmed dead")]
    private partial void LogDead(int id, string name);
    [LoggerMessage(108, LogLevel.Information, "placement: node {Id} {From} → {To} ({Reason})")]
    private partial void LogRecoveryMove(int id, string from, string to, string reason);
    [LoggerMessage(109, LogLevel.Warning, "dropped unexpected {Kind} from {Peer}")]
    private partial void LogUnexpected(string kind, string peer);
    [LoggerMessage(110, LogLevel.Error, "error handling {Kind}: {Message}")]
    private partial void LogHandlerError(string kind, string message);
    [LoggerMessage(111, LogLevel.Information, "coordinator identity {Fingerprint}; nodes pin it with --coordinator-key {PublicKey}")]
    private partial void LogIdentity(string fingerprint, string publicKey);
    [LoggerMessage(113, LogLevel.Warning, "node {Id} banned: {Reason}")]
    private partial void LogBannedNode(int id, string reason);

    [LoggerMessage(112, LogLevel.Warning, "node name {Name} was first seen with key {Known}, but node {Id} at {Endpoint} proves {Key}: another machine uses the name, or the node has a new identity file")]
    private partial void LogKeyChanged(string name, string known, int id, string endpoint, string key);
    [LoggerMessage(113, LogLevel.Information, "node {Name} at {Endpoint}: {Reachability}")]
    private partial void LogReachability(string name, string endpoint, string reachability);
    [LoggerMessage(114, LogLevel.Information, "node {Name} volunteers as a relay: {Decision}")]
    private partial void LogRelayVolunteer(string name, string decision);
}
