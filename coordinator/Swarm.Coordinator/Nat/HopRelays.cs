using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.Logging;
using Swarm.Coordinator.Membership;
using Swarm.Protocol;
using Swarm.Transport;
using Swarm.Transport.Nat;

namespace Swarm.Coordinator.Nat;

/// <summary>
/// Opens and closes the relayed hops of node pairs whose punching failed: on a volunteer relay node when one is
/// eligible (<see cref="RelayChooser"/>: the best first; one that refuses or does not answer is skipped), else on the
/// coordinator's own <see cref="UdpRelay"/>. Tracks every open hop, and reports (<see cref="Lost"/>) those that close
/// under the pair: the coordinator's allocation went silent, the volunteer said its hop went silent, or the volunteer
/// node itself was lost.
/// </summary>
internal sealed partial class HopRelays : IDisposable
{
    /// <summary>How long a volunteer may take to open a hop before the next candidate is asked.</summary>
    public static readonly TimeSpan OpenTimeout = TimeSpan.FromSeconds(2);

    /// <summary>Volunteers asked per hop at most (the best ones) before the coordinator relays it itself: a route waits ≤ 3 × <see cref="OpenTimeout"/>.</summary>
    public const int MaxVolunteersAsked = 3;

    private readonly NodeRegistry _registry;
    private readonly IRelayControlChannel? _volunteers;
    private readonly UdpRelay? _own;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<long, RelayLease> _open = new();
    private long _nextHopId;

    /// <param name="registry">Where the volunteers and the nodes' addresses are.</param>
    /// <param name="volunteers">Reaches volunteer relay nodes; null uses none.</param>
    /// <param name="own">The coordinator's relay; null: no fallback (a hop without a volunteer then cannot be relayed).</param>
    /// <param name="logger">Where relay decisions are logged.</param>
    public HopRelays(NodeRegistry registry, IRelayControlChannel? volunteers, UdpRelay? own, ILogger logger)
    {
        _registry = registry;
        _volunteers = volunteers;
        _own = own;
        _logger = logger;
        if (own is not null) own.Expired += OnOwnExpired;
    }

    /// <summary>Raised when an open hop closed under its pair (on a timer or the inbound thread).</summary>
    public event Action<RelayLease>? Lost;

    /// <summary>
    /// Opens a relayed hop from <paramref name="up"/> to <paramref name="down"/>: on the best volunteer that answers, else
    /// on the coordinator's relay; null when neither is possible.
    /// </summary>
    /// <param name="route">The nodes of the route the hop belongs to (volunteers off it are preferred).</param>
    /// <param name="failed">Volunteers that already failed this pair (skipped).</param>
    /// <param name="cancellationToken">Stops waiting for volunteers (then the coordinator's relay is used).</param>
    public async Task<RelayLease?> OpenAsync(NodeInfo up, NodeInfo down, IReadOnlyCollection<int> route, IReadOnlyCollection<int> failed, CancellationToken cancellationToken)
    {
        if (!EndPoints.TryParse(up.Endpoint, out var upAt) || !EndPoints.TryParse(down.Endpoint, out var downAt)) return null;
        if (_volunteers is not null)
            foreach (var relay in RelayChooser.Rank(_registry.Snapshot(), up.Id, down.Id, route, failed).Take(MaxVolunteersAsked))
            {
                if (cancellationToken.IsCancellationRequested) break;
                if (await OpenOnVolunteerAsync(relay.Info, up, down, upAt!.Address, downAt!.Address, cancellationToken).ConfigureAwait(false) is { } lease)
                    return Track(lease);
            }
        if (_own is null) return null;
        var allocation = _own.Allocate(upAt!.Address, downAt!.Address);
        LogOwnOpened(up.Name, down.Name, allocation.UpstreamSide.Port, allocation.DownstreamSide.Port);
        return Track(new RelayLease(NextHopId(), 0, RelayLease.CoordinatorName, allocation.UpstreamSide.ToString(), allocation.DownstreamSide.ToString(), allocation));
    }

    private async Task<RelayLease?> OpenOnVolunteerAsync(NodeInfo relay, NodeInfo up, NodeInfo down, IPAddress upAt, IPAddress downAt, CancellationToken ct)
    {
        if (!EndPoints.TryParse(relay.Endpoint, out var relayAt)) return null;
        long hopId = NextHopId();
        var open = new RelayControl { Action = RelayControlAction.Open, HopId = hopId, Upstream = upAt.ToString(), Downstream = downAt.ToString() };
        try
        {
            var reply = await _volunteers!.RequestAsync(relay.Id, open, OpenTimeout, ct).ConfigureAwait(false);
            if (reply is RelayControl { Action: RelayControlAction.Opened } opened && opened.HopId == hopId)
            {
                string upstreamSide = new IPEndPoint(relayAt!.Address, opened.UpstreamPort).ToString();
                string downstreamSide = new IPEndPoint(relayAt.Address, opened.DownstreamPort).ToString();
                LogVolunteerOpened(up.Name, down.Name, relay.Name, upstreamSide, downstreamSide);
                return new RelayLease(hopId, relay.Id, relay.Name, upstreamSide, downstreamSide);
            }
            LogVolunteerRefused(relay.Name, up.Name, down.Name, reply is RelayControl c ? c.Reason : reply.GetType().Name);
        }
        catch (Exception e) when (e is PeerDisconnectedException or TimeoutException or OperationCanceledException)
        {
            LogVolunteerRefused(relay.Name, up.Name, down.Name, e.Message);
        }
        return null;
    }

    private long NextHopId() => Interlocked.Increment(ref _nextHopId);

    private RelayLease Track(RelayLease lease)
    {
        _open[lease.HopId] = lease;
        return lease;
    }

    /// <summary>Closes <paramref name="lease"/> (its pair no longer uses it): frees the coordinator's ports, or tells the volunteer.</summary>
    public void Release(RelayLease lease)
    {
        ArgumentNullException.ThrowIfNull(lease);
        lease.MarkClosed();
        if (!_open.TryRemove(lease.HopId, out _)) return;
        if (lease.Local is { } allocation) _own?.Release(allocation);
        else
        {
            try { _volunteers?.Send(lease.RelayNodeId, new RelayControl { Action = RelayControlAction.Close, HopId = lease.HopId }); }
            catch (PeerDisconnectedException) { } // the relay is gone, and its ports with it
        }
    }

    /// <summary>Volunteer <paramref name="relayNodeId"/> closed hop <paramref name="hopId"/> itself (it went silent there).</summary>
    public void OnClosedByVolunteer(int relayNodeId, long hopId, string reason)
    {
        if (!_open.TryGetValue(hopId, out var lease) || lease.RelayNodeId != relayNodeId) return;
        LogVolunteerClosed(lease.RelayName, hopId, reason);
        Close(lease);
    }

    /// <summary>Node <paramref name="nodeId"/> was lost: every hop it relayed is closed and reported.</summary>
    public void OnNodeLost(int nodeId)
    {
        foreach (var lease in _open.Values.Where(l => l.RelayNodeId == nodeId && nodeId != 0))
        {
            LogVolunteerLost(lease.RelayName, lease.HopId);
            Close(lease);
        }
    }

    /// <summary>What the coordinator's own relay carried since start; null when it has none.</summary>
    public RelayUsage? OwnUsage => _own is null ? null : new RelayUsage { Hops = _own.Count, Datagrams = _own.DatagramsForwarded, Bytes = _own.BytesForwarded };

    private void OnOwnExpired(RelayAllocation allocation)
    {
        foreach (var lease in _open.Values.Where(l => ReferenceEquals(l.Local, allocation)))
            Close(lease);
    }

    private void Close(RelayLease lease)
    {
        lease.MarkClosed();
        if (!_open.TryRemove(lease.HopId, out _)) return;
        if (lease.Local is { } allocation) _own?.Release(allocation);
        Lost?.Invoke(lease);
    }

    /// <summary>Stops listening to the coordinator's relay (which its owner disposes).</summary>
    public void Dispose()
    {
        if (_own is not null) _own.Expired -= OnOwnExpired;
    }

    [LoggerMessage(230, LogLevel.Information, "relaying the hop {From} → {To} through this coordinator: relay port {UpstreamPort} for the upstream node, {DownstreamPort} for the downstream node")]
    private partial void LogOwnOpened(string from, string to, int upstreamPort, int downstreamPort);
    [LoggerMessage(233, LogLevel.Information, "relaying the hop {From} → {To} through volunteer {Relay}: {UpstreamSide} for the upstream node, {DownstreamSide} for the downstream node")]
    private partial void LogVolunteerOpened(string from, string to, string relay, string upstreamSide, string downstreamSide);
    [LoggerMessage(234, LogLevel.Warning, "volunteer relay {Relay} did not open the hop {From} → {To}: {Reason}")]
    private partial void LogVolunteerRefused(string relay, string from, string to, string reason);
    [LoggerMessage(235, LogLevel.Warning, "volunteer relay {Relay} closed relayed hop {HopId}: {Reason}")]
    private partial void LogVolunteerClosed(string relay, long hopId, string reason);
    [LoggerMessage(236, LogLevel.Warning, "volunteer relay {Relay} was lost: relayed hop {HopId} is gone")]
    private partial void LogVolunteerLost(string relay, long hopId);
}
