using System.Collections.Concurrent;
using Swarm.Protocol;
using Swarm.Transport;

namespace Swarm.Node;

/// <summary>
/// The links this node hands steps on over — one per next-hop node — and what each costs: the round-trip time the
/// transport's pings measure on that very connection, and how its packets travel. The hop forwarder records every
/// link it uses; heartbeats report the ones used within <see cref="ReportWindow"/>, so the coordinator routes on the
/// latency of the hops it schedules rather than on each node's distance to itself. Thread-safe.
/// </summary>
internal sealed class HopLinks(TimeProvider? time = null)
{
    /// <summary>Links unused for longer than this are no longer reported (the route moved elsewhere).</summary>
    public static readonly TimeSpan ReportWindow = TimeSpan.FromSeconds(60);

    /// <summary>
    /// A link whose round trip still reads 0 is reported once it is this old: the transport's pings (one a second) have
    /// measured it by then, and it is simply faster than their 1 ms resolution (loopback, a LAN).
    /// </summary>
    public static readonly TimeSpan FirstPingWithin = TimeSpan.FromSeconds(2);

    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly ConcurrentDictionary<int, Link> _links = new();

    private sealed record Link(IPeer Peer, HopPath Path, long UsedAt, long FirstUsedAt);

    /// <summary>Records that a step went to node <paramref name="nodeId"/> over <paramref name="peer"/>.</summary>
    public void Used(int nodeId, IPeer peer, HopPath path = HopPath.Direct)
    {
        ArgumentNullException.ThrowIfNull(peer);
        long now = _time.GetTimestamp();
        _links.AddOrUpdate(nodeId, _ => new Link(peer, path, now, now),
            (_, old) => ReferenceEquals(old.Peer, peer) ? old with { Path = path, UsedAt = now } : new Link(peer, path, now, now));
    }

    /// <summary>
    /// The links to report: connected, used within <see cref="ReportWindow"/>, with a measured round trip (non-zero, or
    /// the connection is older than <see cref="FirstPingWithin"/>); most recently used first, at most <see cref="Heartbeat.MaxLinks"/>.
    /// </summary>
    public LinkReport[] Report()
    {
        long now = _time.GetTimestamp();
        var reports = new List<(long UsedAt, LinkReport Report)>();
        foreach (var (nodeId, link) in _links)
        {
            if (!link.Peer.IsConnected || _time.GetElapsedTime(link.UsedAt, now) > ReportWindow)
            {
                _links.TryRemove(new KeyValuePair<int, Link>(nodeId, link));
                continue;
            }
            double rttMs = link.Peer.RoundTripTime.TotalMilliseconds;
            if (rttMs > 0 || _time.GetElapsedTime(link.FirstUsedAt, now) >= FirstPingWithin) reports.Add((link.UsedAt, new LinkReport { ToNodeId = nodeId, Path = link.Path, RttMs = rttMs }));
        }
        return [.. reports.OrderByDescending(r => r.UsedAt).Take(Heartbeat.MaxLinks).Select(r => r.Report)];
    }
}
