using Swarm.Protocol;
using Swarm.Transport.Security;

namespace Swarm.Node;

/// <summary>
/// The keys the coordinator vouched for (<see cref="PeerKeys"/>): the swarm's current members. The node's transport
/// accepts a connection from another node — a hop handing on a step — only when that node proves one of them, so a
/// stranger who knows the swarm secret (or any stranger, in an open swarm) cannot push steps into this node. The
/// coordinator's own connection is one this node opens, and is checked by the pin instead. Thread-safe.
/// </summary>
internal sealed class VouchedPeers
{
    private sealed record Snapshot(long Version, HashSet<string> Keys);

    private volatile Snapshot _current = new(-1, []);

    /// <summary>Members currently vouched for.</summary>
    public int Count => _current.Keys.Count;

    /// <summary>Adopts <paramref name="keys"/> unless a newer list arrived first (large lists travel unordered).</summary>
    /// <returns>True when adopted.</returns>
    public bool Update(PeerKeys keys)
    {
        var next = new Snapshot(keys.Version, keys.Keys.Select(k => Convert.ToHexString(k)).ToHashSet(StringComparer.Ordinal));
        while (true)
        {
            var current = _current;
            if (keys.Version <= current.Version) return false;
            if (Interlocked.CompareExchange(ref _current, next, current) == current) return true;
        }
    }

    /// <summary>The transport's inbound policy: null to accept <paramref name="key"/>, else why not.</summary>
    public string? Authorize(ReadOnlyMemory<byte> key) =>
        _current.Keys.Contains(Convert.ToHexString(key.Span))
            ? null
            : $"the coordinator has not vouched for {PeerKey.Fingerprint(key.Span)} (it is not a current member of this swarm)";
}
