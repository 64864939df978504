using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Nat;
using Swarm.Coordinator.Placement;
using Swarm.Coordinator.Routing;
using Swarm.Coordinator.Telemetry;
using Swarm.Model;
using Swarm.Protocol;
using Swarm.Tokenization;
using Swarm.Transport;
using Swarm.Transport.Nat;
using Swarm.Transport.Security;

namespace Swarm.Coordinator.Service;

/// <summary>
/// The coordinator's control plane: accepts and authenticates nodes, assigns layer ranges (placement),
/// tracks heartbeats and failures (membership), re-covers the ranges of dead or departed nodes, and
/// delivers step replies (<see cref="TokenResult"/>, <see cref="StepFailed"/>) to the jobs waiting for them.
/// </summary>
internal sealed partial class SwarmCoordinator : IHostedService, IAsyncDisposable
{
    private readonly CoordinatorOptions _options;
    private readonly PublishedModelSource? _source;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<int, IPeer> _nodePeers = new();        // node id → control connection
    private readonly ConcurrentDictionary<int, int> _peerNodes = new();          // peer id → node id
    private readonly ConcurrentDictionary<int, NodeLive> _live = new();          // node id → last heartbeat figures
    private readonly ConcurrentDictionary<long, Action<IMessage>> _jobInboxes = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly object _placementGate = new();
    private readonly NodeKeys _keys = new();
    private readonly NodeIdentity? _identity;
    private ITransport? _transport;
    private Task? _inboundLoop, _evaluateLoop;
    private int _nextNodeId;
    private long _nextAssignment;
    private long _recoveries;
    private IDisposable? _observed;
    private readonly UdpRelay _relay;

    /// <summary>Figures a node last reported in its heartbeat.</summary>
    public sealed record NodeLive(int InFlightSteps, int Sessions, long KvTokensUsed, long KvTokensCapacity, double TokensPerSecond, string Device, int Threads, string Name, string DataEndpoint)
    {
        public int KvBlocksUsed { get; init; }
        public int KvBlocksTotal { get; init; }
        public int WaitingSessions { get; init; }
        /// <summary>What the node relayed for others (a volunteer relay), as its last heartbeat said; null when it relays nothing.</summary>
        public RelayUsage? Relay { get; init; }

        /// <summary>True when <paramref name="hb"/> reports other figures than these (an idle node's heartbeats do not: no copy is made for them).</summary>
        internal bool DiffersFrom(Heartbeat hb) =>
            InFlightSteps != hb.InFlightSteps || Sessions != hb.Sessions || KvTokensUsed != hb.KvTokensUsed || KvTokensCapacity != hb.KvTokensCapacity
            || TokensPerSecond != hb.TokensPerSecond || KvBlocksUsed != hb.KvBlocksUsed || KvBlocksTotal != hb.KvBlocksTotal
            || WaitingSessions != hb.WaitingSessions || !Equals(Relay, hb.Relay);
    }

    public ModelConfig Config { get; }
    public string ModelName { get; }
    public ITextTokenizer? Tokenizer { get; }
    public NodeRegistry Registry { get; }
    public IPlacementPolicy Placement { get; }
    /// <summary>When placement runs and what it records (joins, recovery, failure detection ticks, rebalancing).</summary>
    public PlacementController Control { get; }
    public ShortestPathRouter Router { get; }
    /// <summary>How hops between nodes are made (direct, punched, relayed through a volunteer or this coordinator's relay).</summary>
    internal HopPathPlanner HopPaths { get; }
    /// <summary>The relayed hops open now, on volunteer relay nodes and on this coordinator's own relay.</summary>
    internal HopRelays Relays { get; }
    /// <summary>What this coordinator's own relay carried since start.</summary>
    public RelayUsage? OwnRelayUsage => Relays.OwnUsage;
    /// <summary>The node-to-node links planned so far and how each is made (direct, punched, relayed).</summary>
    public IReadOnlyList<PlannedLink> Links => HopPaths.Links;
    public WireDType Wire => _options.Wire;
    public CoordinatorOptions Options => _options;
    public long Recoveries => Interlocked.Read(ref _recoveries);
    public IReadOnlyDictionary<int, NodeLive> Live => _live;
    /// <summary>Where nodes reach this coordinator.</summary>
    public IPEndPoint? ControlEndPoint => _transport?.LocalEndPoint;
    /// <summary>The static public key nodes must see the coordinator prove (empty before start): what <c>--coordinator-key</c> pins.</summary>
    public ReadOnlyMemory<byte> PublicKey => _transport?.LocalKey ?? ReadOnlyMemory<byte>.Empty;
    /// <summary>Byte and message counters of the transport (null before start).</summary>
    public TransportCounters? TransportCounters => _transport?.Counters;
    public DateTimeOffset StartedAt { get; }
    /// <summary>The clock of membership, failure detection, bans and (through <see cref="JobRunner"/>) jobs.</summary>
    internal TimeProvider Time => _time;

    /// <summary>Raised when a node is confirmed dead or leaves (jobs routed through it repair their route).</summary>
    public event Action<int>? NodeLost;

    /// <param name="options">Settings.</param>
    /// <param name="logger">Log.</param>
    /// <param name="time">Clock (a fake one in tests).</param>
    /// <param name="source">The model source announced to nodes (<c>--model-url</c>); null when nodes bring their own folders.</param>
    /// <param name="identity">The key pair the coordinator proves to nodes; null uses a throw-away one (tests).</param>
    public SwarmCoordinator(CoordinatorOptions options, ILogger<SwarmCoordinator> logger, TimeProvider? time = null,
        PublishedModelSource? source = null, NodeIdentity? identity = null)
    {
        _options = options;
        _source = source;
        _identity = identity;
        _logger = logger;
        _time = time ?? TimeProvider.System;
        StartedAt = _time.GetUtcNow();
        Config = ModelConfig.Load(options.Model);
        ModelName = options.ModelName ?? Path.GetFileName(Path.GetFullPath(options.Model).TrimEnd('/'));
        Tokenizer = TokenizerLoader.TryLoad(options.Model);
        var fd = new FailureDetectorOptions
        {
            HeartbeatInterval = options.HeartbeatInterval,
            SuspectAfter = options.SuspectAfter,
            DeadAfter = options.DeadAfter,
        };
        fd.DeadAfterWhenFailing = TimeSpan.FromTicks(Math.Min(fd.DeadAfterWhenFailing.Ticks, options.DeadAfter.Ticks));
        Registry = new NodeRegistry(fd, _time);
        Placement = new MaxMinThroughputPlacementPolicy(ModelShape.FromConfig(Config, LayerMemory.PlacementBytesPerElement), new PlacementOptions());
        Control = new PlacementController(Registry, Placement, _time);
        Control.Assigned += SendAssignment;
        Router = new ShortestPathRouter(new RoutingOptions(), new PowerOfTwoChoicesPolicy(new Random()));
        EndPoints.TryParse(options.Listen, out var listen);
        _relay = new UdpRelay(listen?.Address ?? IPAddress.Loopback, UdpRelay.DefaultIdleTimeout);
        Relays = new HopRelays(Registry, new CoordinatorRelayChannel(this), _relay, logger);
        HopPaths = new HopPathPlanner(Registry, new CoordinatorStepChannel(this), Relays, logger);
        Bans = new Verification.BanBoard(Registry, _time, options.BanTime);
        Bans.Banned += OnBanned;
    }

    /// <summary>"gpt_neox:L×H×V": nodes with another model are refused.</summary>
    public string ModelId => $"gpt_neox:{Config.NumLayers}x{Config.HiddenSize}x{Config.VocabSize}";

    public Task StartAsync(CancellationToken cancellationToken)
    {
        EndPoints.TryParse(_options.Listen, out var listen);
        if (string.IsNullOrEmpty(_options.Secret)) LogNoSecret();
        // Each running job has a step's reply on its way at any time, and a full queue drops it (the job then waits for its
        // step timeout): room for a few per job, and the heartbeats of the nodes, before shedding load.
        int inboundCapacity = Math.Max(4096, 4 * _options.MaxConcurrentJobs);
        _transport = LiteNetTransport.Start(new TransportOptions
        {
            BindAddress = listen!.Address, Port = listen.Port, Secret = _options.Secret, Identity = _identity, InboundCapacity = inboundCapacity,
        }, _logger);
        _transport.PeerDisconnected += OnPeerDisconnected;
        LogIdentity(PeerKey.Fingerprint(PublicKey.Span), PeerKey.Format(PublicKey.Span));
        _inboundLoop = Task.Run(() => InboundLoopAsync(_stop.Token));
        _evaluateLoop = Task.Run(() => EvaluateLoopAsync(_stop.Token));
        _observed = CoordinatorInstrumentation.Observe(this);
        LogListening(_transport.LocalEndPoint.ToString(), ModelName, Config.NumLayers);
        return Task.CompletedTask;
    }

    private int _stopped;

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _stopped, 1) == 1) return;
        _stop.Cancel();
        _observed?.Dispose();
        if (_transport is not null) await _transport.DisposeAsync();
        HopPaths.Dispose();
        Relays.Dispose();
        _relay.Dispose();
        foreach (var t in new[] { _inboundLoop, _evaluateLoop })
            if (t is not null) await Task.WhenAny(t, Task.Delay(2000, CancellationToken.None));
    }

    public async ValueTask DisposeAsync() => await StopAsync(CancellationToken.None);

    // ---------------------------------------------------------------- jobs' view

    /// <summary>Registers a callback for replies to steps of <paramref name="jobId"/>; dispose to unregister.</summary>
    public IDisposable Subscribe(long jobId, Action<IMessage> onReply)
    {
        _jobInboxes[jobId] = onReply;
        return new Unsubscriber(() => _jobInboxes.TryRemove(jobId, out _));
    }

    private sealed class Unsubscriber(Action dispose) : IDisposable
    {
        public void Dispose() => dispose();
    }

    /// <summary>Sends a message to a node over its control connection (which also carries first-hop steps).</summary>
    /// <exception cref="PeerDisconnectedException">The node is not connected.</exception>
    public void SendToNode(int nodeId, Envelope envelope)
    {
        if (!_nodePeers.TryGetValue(nodeId, out var peer) || !peer.IsConnected)
            throw new PeerDisconnectedException($"node {nodeId} is not connected");
        peer.Send(envelope);
    }

    /// <summary>Sends a request to a node over its control connection and returns the reply's body.</summary>
    /// <exception cref="PeerDisconnectedException">The node is not connected, or went away before replying.</exception>
    /// <exception cref="TimeoutException">No reply within <paramref name="timeout"/>.</exception>
    internal async Task<IMessage> RequestFromNodeAsync(int nodeId, IMessage request, TimeSpan timeout, CancellationToken ct)
    {
        if (!_nodePeers.TryGetValue(nodeId, out var peer) || !peer.IsConnected)
            throw new PeerDisconnectedException($"node {nodeId} is not connected");
        return (await peer.RequestAsync(Envelope.Create(request), timeout, ct).ConfigureAwait(false)).Body;
    }

    public void CountRecovery() => Interlocked.Increment(ref _recoveries);

    // ---------------------------------------------------------------- inbound

    private async Task InboundLoopAsync(CancellationToken ct)
    {
        try
        {
            await foreach (var msg in _transport!.Inbound.ReadAllAsync(ct))
            {
                try { Handle(msg); }
                catch (Exception e) when (e is not OperationCanceledException) { LogHandlerError(msg.Envelope.Body.GetType().Name, e.Message); }
            }
        }
        catch (OperationCanceledException) { }
    }

    private void Handle(InboundMessage msg)
    {
        switch (msg.Envelope.Body)
        {
            case Hello hello: OnHello(msg.Peer, msg.Envelope, hello); break;
            case TokenResult tr: Deliver(tr.JobId, tr); break;
            case StepFailed sf:
                if (sf.Code == ErrorCode.NextHopUnreachable && NodeOf(msg.Peer) is { } from) HopPaths.ReportUnreachable(from, sf.NodeId);
                Deliver(sf.JobId, sf);
                break;
            case Heartbeat hb: OnHeartbeat(msg.Peer, hb); break;
            case RelayControl { Action: RelayControlAction.Closed } rc:
                if (NodeOf(msg.Peer) is { } relay) Relays.OnClosedByVolunteer(relay, rc.HopId, rc.Reason);
                break;
            case RangeReady rr: OnRangeReady(msg.Peer, rr); break;
            case Leave leave: OnLeave(msg.Peer, leave); break;
            case Ack: break;
            default:
                LogUnexpected(msg.Envelope.Body.GetType().Name, msg.Peer.RemoteEndPoint.ToString());
                break;
        }
    }

    private void Deliver(long jobId, IMessage m)
    {
        if (_jobInboxes.TryGetValue(jobId, out var inbox)) inbox(m);
    }

    private int? NodeOf(IPeer peer) => _peerNodes.TryGetValue(peer.Id, out var id) ? id : null;

    /// <summary>
    /// Sends every connected node the keys of the current members (<paramref name="keys"/>, or the list now): a node
    /// accepts hop connections only from these. Called whenever membership changes; each list has a higher version,
    /// so a node ignores lists that arrive late. A joining node gets the list in its Welcome as well.
    /// </summary>
    /// <remarks>
    /// A broadcast costs N messages of N keys: sent on every join of a swarm of N nodes that is O(N²) per join, and a
    /// burst of 1,000 joins moved gigabytes. So broadcasts are at least <see cref="VouchSpacing"/> apart; a change within
    /// that time is sent by the evaluation tick once the spacing has passed (a joining node has the whole list in its
    /// Welcome, and is not routable before its range is loaded).
    /// </remarks>
    private void VouchForMembers(PeerKeys? keys = null)
    {
        lock (_vouchGate)
        {
            if (_time.GetElapsedTime(_lastVouch) < VouchSpacing(_nodePeers.Count))
            {
                _vouchPending = true;
                return;
            }
            _vouchPending = false;
            _lastVouch = _time.GetTimestamp();
        }
        keys ??= _keys.Vouch(_nodePeers.Values.Select(p => p.RemoteKey.ToArray()));
        var peers = _nodePeers.Values.ToArray();
        // A large broadcast (N messages of N keys) would hold up the inbound loop for long enough that heartbeats queue up
        // and the transport sheds messages (seen at 1,000 nodes): it goes out from the thread pool. Lists carry versions,
        // so two broadcasts overlapping cannot leave a node with an older list.
        if (peers.Length <= InlineBroadcastLimit) Broadcast(peers, keys);
        else _ = Task.Run(() => Broadcast(peers, keys));
    }

    /// <summary>Member-key broadcasts to at most this many nodes are sent on the caller's thread.</summary>
    private const int InlineBroadcastLimit = 64;

    private static void Broadcast(IPeer[] peers, PeerKeys keys)
    {
        foreach (var peer in peers)
            try { peer.Send(Envelope.Create(keys)); }
            catch (PeerDisconnectedException) { } // gone: it is about to be forgotten
    }

    /// <summary>Sends a broadcast that <see cref="VouchForMembers"/> held back, once its spacing has passed.</summary>
    private void VouchPending()
    {
        bool due;
        lock (_vouchGate) due = _vouchPending && _time.GetElapsedTime(_lastVouch) >= VouchSpacing(_nodePeers.Count);
        if (due) VouchForMembers();
    }

    /// <summary>Least time between member-key broadcasts: 2 ms per member, at most 2 s (immediate in small swarms).</summary>
    internal static TimeSpan VouchSpacing(int members) => TimeSpan.FromMilliseconds(Math.Min(2000, 2.0 * members));

    private readonly Lock _vouchGate = new();
    private long _lastVouch;
    private bool _vouchPending;

    /// <summary>Sends a range the placement controller gave a node (already recorded in the registry).</summary>
    private void SendAssignment(RangeAssignment move)
    {
        if (move.Reason != PlacementReason.Join) LogRecoveryMove(move.NodeId, move.From?.ToString() ?? "-", move.To.ToString(), move.Reason.ToString());
        int nodeId = move.NodeId;
        var range = move.To;
        if (_nodePeers.TryGetValue(nodeId, out var peer))
        {
            var assign = new AssignRange { Range = range, AssignmentId = Interlocked.Increment(ref _nextAssignment), Tensors = _source?.DigestsFor(Config, range) ?? [],
                Peers = _source is null ? [] : WeightPeers.For(Registry.Snapshot(), nodeId, range) };
            try { peer.Send(Envelope.Create(assign)); }
            catch (PeerDisconnectedException) { }
        }
    }

    private void OnRangeReady(IPeer peer, RangeReady rr)
    {
        if (NodeOf(peer) is not { } id) return;
        lock (_placementGate) Control.RangeReady(id, rr.Range);
        LogServing(id, rr.Range.ToString(), rr.MaxKvTokens);
    }

    private void OnHeartbeat(IPeer peer, Heartbeat hb)
    {
        if (NodeOf(peer) is not { } id) return;
        var result = Registry.Heartbeat(id, peer.RoundTripTime.TotalMilliseconds, hb.Links);
        if (hb.LayerTokensPerSecond > 0) Registry.UpdateThroughput(id, hb.LayerTokensPerSecond);
        if (_live.TryGetValue(id, out var old) && old.DiffersFrom(hb))
            _live[id] = old with { InFlightSteps = hb.InFlightSteps, Sessions = hb.Sessions, KvTokensUsed = hb.KvTokensUsed, KvTokensCapacity = hb.KvTokensCapacity, TokensPerSecond = hb.TokensPerSecond,
                KvBlocksUsed = hb.KvBlocksUsed, KvBlocksTotal = hb.KvBlocksTotal, WaitingSessions = hb.WaitingSessions, Relay = hb.Relay };
        if (result.Outcome == HeartbeatOutcome.MustRegister)
        {
            // Declared dead but alive after all (e.g. a long pause): drop the connection; it re-registers.
            peer.Disconnect("declared dead; re-register");
        }
    }

    private void OnLeave(IPeer peer, Leave leave)
    {
        if (NodeOf(peer) is not { } id) return;
        LogLeaving(id, leave.Reason);
        lock (_placementGate) Control.Leaving(id);
    }

    private void OnPeerDisconnected(IPeer peer, string reason)
    {
        if (!_peerNodes.TryRemove(peer.Id, out var id)) return;
        _nodePeers.TryRemove(id, out _);
        LogDisconnected(id, reason);
        Relays.OnNodeLost(id); // a relay out of touch cannot be told to close its hops: the pairs move to another
        lock (_placementGate)
        {
            if (Control.Disconnected(id)) Lost(id);
        }
    }

    /// <summary>How often a fully covered swarm is checked for a rebalancing move (10 s).</summary>
    public static readonly TimeSpan RebalanceInterval = PlacementController.RebalanceInterval;

    private async Task EvaluateLoopAsync(CancellationToken ct)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(250), _time);
        try
        {
            while (await timer.WaitForNextTickAsync(ct))
            {
                lock (_placementGate)
                {
                    foreach (int dead in Control.Tick().Dead)
                    {
                        LogDead(dead, Registry.Get(dead)?.Info.Name ?? "");
                        if (_nodePeers.TryRemove(dead, out var peer))
                        {
                            _peerNodes.TryRemove(peer.Id, out _);
                            peer.Disconnect("declared dead");
                        }
                        Lost(dead);
                    }
                    // Nodes that joined while the model was fully covered, or whose ranges were lost: fill gaps.
                    Control.Maintain();
                    VouchPending();
                }
            }
        }
        catch (OperationCanceledException) { }
    }
}
