using Swarm.Protocol;
using Swarm.Transport.Security;

namespace Swarm.Coordinator.Membership;

/// <summary>
/// What the coordinator knows about node identities: the key each node name was first seen with (so a known name
/// that shows up with another key is flagged, as ssh's known_hosts flags a changed host key), and the versioned list
/// of member keys it vouches for to every node (<see cref="PeerKeys"/>). Kept in memory: a restarted coordinator
/// starts over. Thread-safe.
/// </summary>
internal sealed class NodeKeys
{
    /// <summary>Most names remembered; further new names are not remembered (and so never flagged).</summary>
    public const int MaxNames = 100_000;

    private readonly Dictionary<string, string> _firstSeen = new(StringComparer.Ordinal);
    private long _version;

    /// <summary>
    /// Records that <paramref name="name"/> registered with the key named <paramref name="fingerprint"/>; returns the
    /// fingerprint the name was first seen with when it differs, else null. The first key stays the name's reference.
    /// </summary>
    public string? Observe(string name, string fingerprint)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(fingerprint);
        lock (_firstSeen)
        {
            if (_firstSeen.TryGetValue(name, out var known)) return known == fingerprint ? null : known;
            if (_firstSeen.Count < MaxNames) _firstSeen[name] = fingerprint;
            return null;
        }
    }

    /// <summary>The next list of member keys to send to every node (a new, higher version each call; duplicates removed).</summary>
    public PeerKeys Vouch(IEnumerable<byte[]> memberKeys)
    {
        var distinct = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        foreach (var key in memberKeys)
            if (key is { Length: PeerKey.Length }) distinct.TryAdd(Convert.ToHexString(key), key);
        return new PeerKeys { Version = Interlocked.Increment(ref _version), Keys = [.. distinct.Values] };
    }
}
