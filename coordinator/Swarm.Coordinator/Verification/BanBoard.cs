using Swarm.Coordinator.Membership;

namespace Swarm.Coordinator.Verification;

/// <summary>A node was banned.</summary>
/// <param name="NodeId">The banned node.</param>
/// <param name="Since">
/// When it last passed a spot check (its join time if never): results it returned since then are suspect, and the jobs
/// that used it since then recompute from their first step through it.
/// </param>
/// <param name="Reason">Why, for logs and error events.</param>
internal sealed record NodeBan(int NodeId, DateTimeOffset Since, string Reason);

/// <summary>
/// The coordinator's bans: marks a node <see cref="NodeStatus.Banned"/> in the registry, remembers its identity key
/// (fingerprint) for the ban time so a re-registration with the same key is refused, and tells whoever listens — the
/// coordinator (disconnects the node, re-routes its sessions) and the running jobs (recompute what it touched).
/// Thread-safe.
/// </summary>
internal sealed class BanBoard
{
    private readonly NodeRegistry _registry;
    private readonly TimeProvider _time;
    private readonly TimeSpan _banTime;
    private readonly Dictionary<string, DateTimeOffset> _bannedKeys = new(StringComparer.Ordinal);

    /// <param name="registry">Where banned nodes are marked.</param>
    /// <param name="time">Clock of ban expiry.</param>
    /// <param name="banTime">How long a banned identity is refused.</param>
    public BanBoard(NodeRegistry registry, TimeProvider time, TimeSpan banTime)
    {
        _registry = registry;
        _time = time;
        _banTime = banTime;
    }

    /// <summary>Raised after a node was banned (on the banning thread).</summary>
    public event Action<NodeBan>? Banned;

    /// <summary>Nodes banned since start.</summary>
    public int Count { get; private set; }

    /// <summary>Bans node <paramref name="nodeId"/>; false when it is unknown or already banned.</summary>
    /// <param name="nodeId">The node.</param>
    /// <param name="reason">Why, for logs and error events.</param>
    /// <param name="caughtAt">
    /// When the step it was caught at was answered, or null. Checks are judged after their steps, so the node may have
    /// passed a check of a later step (in another job) before this one was judged: the ban's <see cref="NodeBan.Since"/>
    /// is then moved back to just before the caught step, which is always suspect.
    /// </param>
    public bool Ban(int nodeId, string reason, DateTimeOffset? caughtAt = null)
    {
        var before = _registry.Get(nodeId);
        if (before is null || before.Banned) return false;
        _registry.Ban(nodeId);
        if (before.Info.KeyFingerprint is { } key)
            lock (_bannedKeys) _bannedKeys[key] = _time.GetUtcNow() + _banTime;
        lock (_bannedKeys) Count++;
        var since = before.LastPassedCheck ?? before.JoinedAt;
        if (caughtAt is { } c && c <= since) since = c - TimeSpan.FromTicks(1);
        Banned?.Invoke(new NodeBan(nodeId, since, reason));
        return true;
    }

    /// <summary>When the ban of the identity with key fingerprint <paramref name="keyFingerprint"/> ends, or null when it is not banned.</summary>
    public DateTimeOffset? BannedUntil(string? keyFingerprint)
    {
        if (string.IsNullOrEmpty(keyFingerprint)) return null;
        lock (_bannedKeys)
        {
            if (!_bannedKeys.TryGetValue(keyFingerprint, out var until)) return null;
            if (until > _time.GetUtcNow()) return until;
            _bannedKeys.Remove(keyFingerprint);
            return null;
        }
    }
}
