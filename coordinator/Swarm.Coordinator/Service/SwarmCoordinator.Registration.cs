using System.Net;
using Swarm.Coordinator.Membership;
using Swarm.Protocol;
using Swarm.Transport;
using Swarm.Transport.Nat;

namespace Swarm.Coordinator.Service;

/// <summary>The coordinator's registration of nodes: checks, the reachability probe, the Welcome, the first range.</summary>
internal sealed partial class SwarmCoordinator
{
    /// <summary>How long a joining node has to answer the reachability probe (a node behind NAT costs its registration this much).</summary>
    private static readonly TimeSpan ProbeTimeout = TimeSpan.FromMilliseconds(800);

    private void OnHello(IPeer peer, Envelope env, Hello hello)
    {
        // A node without a local checkpoint announces no model id; it takes the swarm's source.
        bool fetches = hello.ModelId.Length == 0 && _source is not null;
        string? problem = hello.ModelId != ModelId && !fetches ? $"model mismatch: the swarm serves {ModelId}, the node has {hello.ModelId}"
            : hello.ProtocolVersion != ProtocolInfo.Version ? $"protocol version {hello.ProtocolVersion} is not supported (this coordinator speaks {ProtocolInfo.Version})"
            : hello.MemoryBudgetBytes <= 0 ? "memory budget must be positive"
            : hello.DataEndpoint.Length > 0 && !EndPoints.TryParse(hello.DataEndpoint, out _) ? $"data endpoint '{hello.DataEndpoint}' is not host:port"
            : hello.PinnedRange is { } p && (p.Start < 0 || p.End > Config.NumLayers || p.Start >= p.End) ? $"pinned range {p} is outside the model's {Config.NumLayers} layers"
            : Bans.BannedUntil(peer.RemoteFingerprint) is { } until ? $"this identity is banned until {until:u}: a spot check caught it returning wrong results" : null;
        if (problem is not null)
        {
            LogRefused(peer.RemoteEndPoint.ToString(), problem);
            peer.Send(env.CreateReply(new Refused { Code = hello.ModelId != ModelId ? ErrorCode.ModelMismatch
                : hello.ProtocolVersion != ProtocolInfo.Version ? ErrorCode.VersionMismatch : problem.Contains("banned") ? ErrorCode.Banned : ErrorCode.BadRequest,
                Reason = problem }));
            return;
        }
        // A node that advertises no endpoint (it binds a wildcard address) is reached where its connection comes from.
        var observed = peer.RemoteEndPoint;
        string endpoint = EndPoints.TryParse(hello.DataEndpoint, out var advertised) && !advertised!.Address.Equals(IPAddress.Any)
            && !advertised.Address.Equals(IPAddress.IPv6Any) ? hello.DataEndpoint : observed.ToString();
        EndPoints.TryParse(endpoint, out var reachAt);
        if (IPAddress.IsLoopback(reachAt!.Address)) Register(peer, env, hello, endpoint, reachable: true);
        else _ = ProbeThenRegisterAsync(peer, env, hello, endpoint, reachAt);
    }

    /// <summary>
    /// The reachability check: an unsolicited probe from a fresh socket to the node's endpoint. Run off the inbound loop
    /// (it waits up to <see cref="ProbeTimeout"/> for a node behind NAT); the node sends nothing before its Welcome.
    /// </summary>
    private async Task ProbeThenRegisterAsync(IPeer peer, Envelope env, Hello hello, string endpoint, IPEndPoint reachAt)
    {
        try
        {
            EndPoints.TryParse(_options.Listen, out var listen);
            bool reachable = await ReachabilityProbe.ProbeAsync(listen!.Address, reachAt, ProbeTimeout, _stop.Token);
            if (!peer.IsConnected || _stop.IsCancellationRequested) return;
            LogReachability(hello.NodeName, endpoint, reachable ? "reachable directly" : "behind NAT: hops to it are punched or relayed");
            Register(peer, env, hello, endpoint, reachable);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LogHandlerError(nameof(Hello), e.Message);
        }
    }

    /// <summary>Admits a node that passed the checks: its id, its Welcome, the member keys, and a range to serve.</summary>
    private void Register(IPeer peer, Envelope env, Hello hello, string endpoint, bool reachable)
    {
        int id = Interlocked.Increment(ref _nextNodeId);
        string name = string.IsNullOrWhiteSpace(hello.NodeName) ? $"node-{id}" : hello.NodeName;
        byte[]? key = peer.RemoteKey.IsEmpty ? null : peer.RemoteKey.ToArray();
        string? keyChangedFrom = key is null ? null : _keys.Observe(name, peer.RemoteFingerprint);
        if (keyChangedFrom is not null) LogKeyChanged(name, keyChangedFrom, id, peer.RemoteEndPoint.ToString(), peer.RemoteFingerprint);
        var info = new NodeInfo
        {
            Id = id,
            Name = name,
            Key = key,
            KeyChangedFrom = keyChangedFrom,
            Endpoint = endpoint,
            Reachable = reachable,
            MemoryBudgetBytes = hello.MemoryBudgetBytes,
            LayerWeightBytes = hello.LayerWeightBytes,
            KvBytesPerTokenPerLayer = hello.KvBytesPerTokenPerLayer,
            Device = hello.Device,
            Threads = hello.Threads,
            LayerThroughput = Math.Max(1e-3, hello.LayerTokensPerSecond),
            PinnedRange = hello.PinnedRange is { } pr ? pr : null,
            SharesWeights = hello.SharesWeights,
            OffersRelay = hello.OffersRelay && reachable,
            DraftModel = hello.DraftModel,
        };
        _nodePeers[id] = peer;
        _peerNodes[peer.Id] = id;
        _live[id] = new NodeLive(0, 0, 0, 0, 0, info.Device, info.Threads, info.Name, info.Endpoint);
        var members = _keys.Vouch(_nodePeers.Values.Select(p => p.RemoteKey.ToArray())); // the keys their control connections proved
        peer.Send(env.CreateReply(new Welcome { NodeId = id, HeartbeatIntervalMs = (int)_options.HeartbeatInterval.TotalMilliseconds,
            ModelSource = _source?.Source.Key ?? "", Members = members, ObservedEndpoint = endpoint, Reachable = reachable,
            RelayAccepted = info.OffersRelay }));
        if (hello.OffersRelay) LogRelayVolunteer(name, info.OffersRelay ? $"relaying hops through it at {endpoint}" : "declined: it is not reachable directly");
        VouchForMembers(members);
        lock (_placementGate)
        {
            // A node that already holds layers (coordinator restart, reconnect) keeps serving them.
            var range = Control.Join(info, hello.HeldRange);
            LogJoined(info.Name, id, info.Endpoint, peer.RemoteFingerprint, hello.HeldRange is { } held ? $"holds {held}"
                : range is { } r ? $"assigned layers {r}" : "no range fits its memory budget; standing by");
        }
    }
}
