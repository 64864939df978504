using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Swarm.Coordinator.Jobs;
using Swarm.Coordinator.Membership;
using Swarm.Protocol;
using Swarm.Transport;
using Swarm.Transport.Nat;

namespace Swarm.Coordinator.Nat;

/// <summary>One node-to-node link of a route as planned: how <see cref="From"/> reaches <see cref="To"/>.</summary>
/// <param name="From">The upstream node (it connects).</param>
/// <param name="To">The downstream node.</param>
/// <param name="Path">Direct, punched or relayed.</param>
/// <param name="Via">The relay endpoint the upstream connects to (relayed links), else empty.</param>
internal sealed record PlannedLink(int From, int To, HopPath Path, string Via);

/// <summary>
/// Decides how each node-to-node hop of a route is made, with the coordinator as introducer and relay
/// (the coordinator's own links to nodes are their control connections, which the nodes opened: always direct):
/// <list type="bullet">
/// <item>the downstream node is reachable (its reachability probe was answered): <b>direct</b>;</item>
/// <item>else <b>punched</b>: the downstream node is told (<see cref="Introduce"/>) to send a few datagrams to the upstream's
/// observed endpoint, which opens its NAT to the upstream's connection; the upstream connects to the downstream's observed
/// endpoint;</item>
/// <item>once punching that pair failed (the upstream reported it unreachable — a symmetric NAT maps every destination to
/// another port): <b>relayed</b> through a <see cref="RelayAllocation"/> of the coordinator's <see cref="UdpRelay"/>; the
/// downstream punches toward the relay, the upstream connects to the relay, and the two run their encrypted channel
/// through it. A relayed link's allocation is kept for the pair while it carries traffic.</item>
/// </list>
/// </summary>
internal sealed partial class HopPathPlanner : IDisposable
{
    private readonly NodeRegistry _registry;
    private readonly IStepChannel _channel;
    private readonly UdpRelay? _relay;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<(int From, int To), PairState> _pairs = new();

    private sealed class PairState
    {
        public bool PunchFailed;
        public RelayAllocation? Relay;
        public HopPath Planned;
    }

    /// <param name="registry">Where nodes' observed endpoints and reachability are.</param>
    /// <param name="channel">Carries the introductions to the nodes.</param>
    /// <param name="relay">The coordinator's relay; null when it relays nothing (hops that cannot be punched then fail).</param>
    /// <param name="logger">Where link decisions are logged.</param>
    public HopPathPlanner(NodeRegistry registry, IStepChannel channel, UdpRelay? relay, ILogger logger)
    {
        _registry = registry;
        _channel = channel;
        _relay = relay;
        _logger = logger;
        if (relay is not null) relay.Expired += OnRelayExpired;
    }

    /// <summary>Raised (on a timer thread) with (from, to) when a relayed link went silent: routes over it have lost it.</summary>
    public event Action<int, int>? LinkLost;

    /// <summary>The links planned so far, for the operator's view.</summary>
    public IReadOnlyList<PlannedLink> Links =>
        [.. _pairs.Select(p => new PlannedLink(p.Key.From, p.Key.To, p.Value.Planned, p.Value.Relay is { IsOpen: true } r ? ViaOf(r) : ""))];

    /// <summary>
    /// <paramref name="route"/> with <see cref="Hop.Path"/> and <see cref="Hop.Via"/> set on every hop after the first,
    /// having introduced the downstream node of every punched or relayed hop.
    /// </summary>
    public Hop[] Plan(Hop[] route)
    {
        var planned = route.ToArray();
        for (int i = 1; i < planned.Length; i++)
            planned[i] = PlanHop(planned[i - 1].NodeId, planned[i]);
        return planned;
    }

    private Hop PlanHop(int from, Hop hop)
    {
        var up = _registry.Get(from)?.Info;
        var down = _registry.Get(hop.NodeId)?.Info;
        if (up is null || down is null || down.Reachable) return hop with { Path = HopPath.Direct };
        var state = _pairs.GetOrAdd((from, hop.NodeId), _ => new PairState());
        lock (state)
        {
            if (!state.PunchFailed || _relay is null || !EndPoints.TryParse(up.Endpoint, out var upAt) || !EndPoints.TryParse(down.Endpoint, out var downAt))
            {
                state.Planned = HopPath.Punched;
                Introduce(hop.NodeId, new Introduce { PeerNodeId = from, Target = up.Endpoint, Path = HopPath.Punched });
                return hop with { Path = HopPath.Punched };
            }
            if (state.Relay is not { IsOpen: true })
            {
                state.Relay = _relay.Allocate(upAt!.Address, downAt!.Address);
                LogRelayOpened(up.Name, down.Name, state.Relay.UpstreamSide.Port, state.Relay.DownstreamSide.Port);
            }
            state.Planned = HopPath.Relayed;
            Introduce(hop.NodeId, new Introduce { PeerNodeId = from, Target = state.Relay.DownstreamSide.ToString(), Path = HopPath.Relayed });
            return hop with { Path = HopPath.Relayed, Via = ViaOf(state.Relay) };
        }
    }

    private static string ViaOf(RelayAllocation relay) => relay.UpstreamSide.ToString();

    private void Introduce(int nodeId, Introduce introduce)
    {
        try { _channel.Send(nodeId, introduce, 0); }
        catch (PeerDisconnectedException) { } // the step will fail on this route and the job re-routes
    }

    /// <summary>
    /// Node <paramref name="from"/> could not reach node <paramref name="to"/> on the path planned: a punched pair is
    /// relayed from now on; a relayed pair gets a fresh relay allocation next time.
    /// </summary>
    public void ReportUnreachable(int from, int to)
    {
        if (!_pairs.TryGetValue((from, to), out var state)) return;
        lock (state)
        {
            if (state.Planned == HopPath.Punched && !state.PunchFailed)
            {
                state.PunchFailed = true;
                LogPunchFailed(NameOf(from), NameOf(to), _relay is null ? "no relay is available" : "relaying it from now on");
            }
            else if (state.Planned == HopPath.Relayed && state.Relay is { } relay)
            {
                _relay?.Release(relay);
                state.Relay = null;
            }
        }
    }

    /// <summary>A node left or died: the relay allocations of its links are closed and its pairs forgotten.</summary>
    public void Forget(int nodeId)
    {
        foreach (var key in _pairs.Keys.Where(k => k.From == nodeId || k.To == nodeId).ToArray())
            if (_pairs.TryRemove(key, out var state) && state.Relay is { } relay) _relay?.Release(relay);
    }

    private void OnRelayExpired(RelayAllocation allocation)
    {
        foreach (var (key, state) in _pairs)
            lock (state)
                if (ReferenceEquals(state.Relay, allocation))
                {
                    state.Relay = null;
                    LogRelayExpired(NameOf(key.From), NameOf(key.To), allocation.UpstreamSide.Port);
                    LinkLost?.Invoke(key.From, key.To);
                }
    }

    private string NameOf(int id) => _registry.Get(id)?.Info.Name ?? $"node {id}";

    /// <summary>Stops listening to the relay (which its owner disposes).</summary>
    public void Dispose()
    {
        if (_relay is not null) _relay.Expired -= OnRelayExpired;
    }

    [LoggerMessage(230, LogLevel.Information, "relaying the hop {From} → {To} through this coordinator: relay port {UpstreamPort} for the upstream node, {DownstreamPort} for the downstream node")]
    private partial void LogRelayOpened(string from, string to, int upstreamPort, int downstreamPort);
    [LoggerMessage(231, LogLevel.Warning, "punching the hop {From} → {To} failed (a symmetric NAT?): {Next}")]
    private partial void LogPunchFailed(string from, string to, string next);
    [LoggerMessage(232, LogLevel.Warning, "the relay of the hop {From} → {To} (port {UpstreamPort}) went silent and was closed")]
    private partial void LogRelayExpired(string from, string to, int upstreamPort);
}
