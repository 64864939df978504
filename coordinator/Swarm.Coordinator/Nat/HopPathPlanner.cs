using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Swarm.Coordinator.Jobs;
using Swarm.Coordinator.Membership;
using Swarm.Protocol;
using Swarm.Transport;

namespace Swarm.Coordinator.Nat;

/// <summary>One node-to-node link of a route as planned: how <see cref="From"/> reaches <see cref="To"/>.</summary>
/// <param name="From">The upstream node (it connects).</param>
/// <param name="To">The downstream node.</param>
/// <param name="Path">Direct, punched or relayed.</param>
/// <param name="Via">The relay endpoint the upstream connects to (relayed links), else empty.</param>
/// <param name="Relay">Who relays it (relayed links): a volunteer node's name or <c>coordinator</c>; else empty.</param>
internal sealed record PlannedLink(int From, int To, HopPath Path, string Via, string Relay = "");

/// <summary>
/// Decides how each node-to-node hop of a route is made, with the coordinator as introducer
/// (the coordinator's own links to nodes are their control connections, which the nodes opened: always direct):
/// <list type="bullet">
/// <item>the downstream node is reachable (its reachability probe was answered): <b>direct</b>;</item>
/// <item>else <b>punched</b>: the downstream node is told (<see cref="Introduce"/>) to send a few datagrams to the upstream's
/// observed endpoint, which opens its NAT to the upstream's connection; the upstream connects to the downstream's observed
/// endpoint;</item>
/// <item>once punching that pair failed (the upstream reported it unreachable — a symmetric NAT maps every destination to
/// another port): <b>relayed</b> through a hop that <see cref="HopRelays"/> opens — on a volunteer relay node when one is
/// eligible, else on the coordinator's own relay; the downstream punches toward the relay, the upstream connects to the
/// relay, and the two run their encrypted channel through it. The relayed hop is kept for the pair while it carries
/// traffic; when it fails, a volunteer that carried it is not asked for that pair again.</item>
/// </list>
/// </summary>
internal sealed partial class HopPathPlanner : IDisposable
{
    private readonly NodeRegistry _registry;
    private readonly IStepChannel _channel;
    private readonly HopRelays? _relays;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<(int From, int To), PairState> _pairs = new();

    private sealed class PairState
    {
        public readonly SemaphoreSlim Opening = new(1, 1);
        public readonly HashSet<int> FailedRelays = [];
        public bool PunchFailed;
        public RelayLease? Lease;
        public HopPath Planned;
    }

    /// <param name="registry">Where nodes' observed endpoints and reachability are.</param>
    /// <param name="channel">Carries the introductions to the nodes.</param>
    /// <param name="relays">Opens relayed hops; null when nothing relays (hops that cannot be punched then fail).</param>
    /// <param name="logger">Where link decisions are logged.</param>
    public HopPathPlanner(NodeRegistry registry, IStepChannel channel, HopRelays? relays, ILogger logger)
    {
        _registry = registry;
        _channel = channel;
        _relays = relays;
        _logger = logger;
        if (relays is not null) relays.Lost += OnRelayLost;
    }

    /// <summary>Raised with (from, to) when a relayed link closed under its pair: routes over it have lost it.</summary>
    public event Action<int, int>? LinkLost;

    /// <summary>The links planned so far, for the operator's view.</summary>
    public IReadOnlyList<PlannedLink> Links =>
        [.. _pairs.Select(p => p.Value.Lease is { IsOpen: true } r
            ? new PlannedLink(p.Key.From, p.Key.To, p.Value.Planned, r.UpstreamSide, r.RelayName)
            : new PlannedLink(p.Key.From, p.Key.To, p.Value.Planned, ""))];

    /// <summary>
    /// <paramref name="route"/> with <see cref="Hop.Path"/> and <see cref="Hop.Via"/> set on every hop after the first,
    /// having opened the relayed hops it needs and introduced the downstream node of every punched or relayed hop.
    /// </summary>
    /// <param name="route">The route's hops in order.</param>
    /// <param name="cancellationToken">Stops waiting for a volunteer relay (the coordinator's relay is used instead).</param>
    public async Task<Hop[]> PlanAsync(Hop[] route, CancellationToken cancellationToken = default)
    {
        var planned = route.ToArray();
        int[] nodes = [.. route.Select(h => h.NodeId)];
        for (int i = 1; i < planned.Length; i++)
            planned[i] = await PlanHopAsync(planned[i - 1].NodeId, planned[i], nodes, cancellationToken).ConfigureAwait(false);
        return planned;
    }

    private async Task<Hop> PlanHopAsync(int from, Hop hop, int[] route, CancellationToken ct)
    {
        var up = _registry.Get(from)?.Info;
        var down = _registry.Get(hop.NodeId)?.Info;
        if (up is null || down is null || down.Reachable) return hop with { Path = HopPath.Direct };
        var state = _pairs.GetOrAdd((from, hop.NodeId), _ => new PairState());
        await state.Opening.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            RelayLease? lease;
            int[] failed;
            lock (state)
            {
                lease = state.Lease is { IsOpen: true } open ? open : null;
                failed = [.. state.FailedRelays];
                if (!state.PunchFailed || _relays is null) return Punched(state, from, hop, up);
            }
            lease ??= await _relays.OpenAsync(up, down, route, failed, ct).ConfigureAwait(false);
            lock (state)
            {
                if (lease is null) return Punched(state, from, hop, up);
                state.Lease = lease;
                state.Planned = HopPath.Relayed;
            }
            Introduce(hop.NodeId, new Introduce { PeerNodeId = from, Target = lease.DownstreamSide, Path = HopPath.Relayed });
            return hop with { Path = HopPath.Relayed, Via = lease.UpstreamSide };
        }
        finally
        {
            state.Opening.Release();
        }
    }

    private Hop Punched(PairState state, int from, Hop hop, NodeInfo up)
    {
        state.Planned = HopPath.Punched;
        Introduce(hop.NodeId, new Introduce { PeerNodeId = from, Target = up.Endpoint, Path = HopPath.Punched });
        return hop with { Path = HopPath.Punched };
    }

    private void Introduce(int nodeId, Introduce introduce)
    {
        try { _channel.Send(nodeId, introduce, 0); }
        catch (PeerDisconnectedException) { } // the step will fail on this route and the job re-routes
    }

    /// <summary>
    /// Node <paramref name="from"/> could not reach node <paramref name="to"/> on the path planned: a punched pair is
    /// relayed from now on; a relayed pair gets a fresh relayed hop next time, not on a volunteer that failed it.
    /// </summary>
    public void ReportUnreachable(int from, int to)
    {
        if (!_pairs.TryGetValue((from, to), out var state)) return;
        RelayLease? failed = null;
        lock (state)
        {
            if (state.Planned == HopPath.Punched && !state.PunchFailed)
            {
                state.PunchFailed = true;
                LogPunchFailed(NameOf(from), NameOf(to), _relays is null ? "no relay is available" : "relaying it from now on");
            }
            else if (state.Planned == HopPath.Relayed && state.Lease is { } lease)
            {
                if (lease.RelayNodeId != 0) state.FailedRelays.Add(lease.RelayNodeId);
                state.Lease = null;
                failed = lease;
            }
        }
        if (failed is not null) _relays?.Release(failed);
    }

    /// <summary>A node left or died: the relayed hops of its pairs are closed, its pairs forgotten, and the hops it relayed for others lost.</summary>
    public void Forget(int nodeId)
    {
        foreach (var key in _pairs.Keys.Where(k => k.From == nodeId || k.To == nodeId).ToArray())
            if (_pairs.TryRemove(key, out var state) && state.Lease is { } lease) _relays?.Release(lease);
        _relays?.OnNodeLost(nodeId);
    }

    private void OnRelayLost(RelayLease lease)
    {
        foreach (var (key, state) in _pairs)
        {
            bool lost;
            lock (state)
            {
                lost = ReferenceEquals(state.Lease, lease);
                if (lost)
                {
                    state.Lease = null;
                    if (lease.RelayNodeId != 0) state.FailedRelays.Add(lease.RelayNodeId);
                }
            }
            if (!lost) continue;
            LogRelayLost(NameOf(key.From), NameOf(key.To), lease.RelayName, lease.UpstreamSide);
            LinkLost?.Invoke(key.From, key.To);
        }
    }

    private string NameOf(int id) => _registry.Get(id)?.Info.Name ?? $"node {id}";

    /// <summary>Stops listening to the relays (which their owner disposes).</summary>
    public void Dispose()
    {
        if (_relays is not null) _relays.Lost -= OnRelayLost;
    }

    [LoggerMessage(231, LogLevel.Warning, "punching the hop {From} → {To} failed (a symmetric NAT?): {Next}")]
    private partial void LogPunchFailed(string from, string to, string next);
    [LoggerMessage(232, LogLevel.Warning, "the relayed hop {From} → {To} through {Relay} ({UpstreamSide}) is gone (it went silent, or its relay was lost): jobs over it re-route")]
    private partial void LogRelayLost(string from, string to, string relay, string upstreamSide);
}
