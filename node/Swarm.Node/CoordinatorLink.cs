using System.Diagnostics;
using System.Net;
using Microsoft.Extensions.Logging;
using Swarm.Model;
using Swarm.Protocol;
using Swarm.Transport;

namespace Swarm.Node;

/// <summary>What a node announces about itself in <see cref="Hello"/>, fixed for the life of the process.</summary>
/// <param name="Devices">The compute devices, one per tensor-parallel shard, comma-separated (<see cref="NodeOptions.DeviceList"/>).</param>
/// <param name="LayerWeightBytes">One layer's weights in the node's weight format (0 when the model is not known yet).</param>
/// <param name="KvBytesPerTokenPerLayer">KV bytes per token per layer in the node's compute dtype (0 when the model is not known yet).</param>
internal sealed record NodeProfile(string Name, long MemoryBudgetBytes, string Devices, int Threads, double LayerTokensPerSecond,
    LayerRange? PinnedRange, string DataEndpoint, string ModelId, bool SharesWeights, long LayerWeightBytes = 0, long KvBytesPerTokenPerLayer = 0,
    bool OffersRelay = false, string DraftModel = "")
{
    /// <summary>The profile of a node started with <paramref name="options"/>, listening on <paramref name="listening"/>.</summary>
    /// <param name="model">The local checkpoint's configuration; null for a node that fetches the swarm's model (no model id).</param>
    public static NodeProfile From(NodeOptions options, IPEndPoint listening, ModelConfig? model, double layerTokensPerSecond) => new(
        Name: options.Name ?? $"{Environment.MachineName}:{listening.Port}",
        MemoryBudgetBytes: options.MemoryBytes,
        Devices: options.DeviceList,
        Threads: options.Threads > 0 ? options.Threads : Environment.ProcessorCount,
        LayerTokensPerSecond: layerTokensPerSecond,
        PinnedRange: LayerRange.TryParse(options.Layers, out var layers) ? layers : null,
        // A wildcard socket does not know its address: the coordinator fills in the one it sees (after any NAT).
        DataEndpoint: options.Advertise ?? (listening.Address.Equals(IPAddress.Any) || listening.Address.Equals(IPAddress.IPv6Any) ? "" : listening.ToString()),
        ModelId: model is null ? "" : $"gpt_neox:{model.NumLayers}x{model.HiddenSize}x{model.VocabSize}",
        SharesWeights: options.SharesWeights,
        LayerWeightBytes: model is null ? 0 : LayerMemory.WeightBytesPerLayer(model, options.WeightFormat),
        KvBytesPerTokenPerLayer: model is null ? 0 : LayerMemory.KvBytesPerTokenPerLayer(model, options.WeightFormat.BytesPerActivation()),
        OffersRelay: options.Relay,
        DraftModel: string.IsNullOrWhiteSpace(options.DraftModel) ? "" : DraftModelIdentity.Of(options.DraftModel));
}

/// <summary>
/// The node's link to the coordinator: connects and registers (<see cref="Hello"/> → <see cref="Welcome"/>) with
/// exponential back-off, registers again — announcing the range it still holds — when the coordinator goes away
/// (e.g. restarts), sends heartbeats, carries messages to the coordinator, and handles the leave/drain exchange.
/// </summary>
internal sealed class CoordinatorLink : IDisposable
{
    private static readonly TimeSpan FirstRetry = TimeSpan.FromMilliseconds(200), MaxRetry = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan HelloTimeout = TimeSpan.FromSeconds(10);

    private readonly ITransport _transport;
    private readonly IPEndPoint _coordinator;
    private readonly NodeProfile _profile;
    private readonly IStageView _stage;
    private readonly NodeStatus _status;
    private readonly ILogger _logger;
    private readonly ReadOnlyMemory<byte> _coordinatorKey;
    private readonly CancellationTokenSource _stop = new();
    private volatile IPeer? _peer;
    private volatile Heartbeat? _lastHeartbeat;
    private readonly HopLinks _links;
    private volatile bool _leaving;
    private bool _disposed;
    private long _heartbeatMs = 500;
    private double _benchmarked;

    /// <param name="coordinatorKey">The coordinator's pinned public key (<c>--coordinator-key</c>); empty accepts any.</param>
    /// <param name="links">The links the hop forwarder records; heartbeats report them (default: a table nothing records into).</param>
    public CoordinatorLink(ITransport transport, IPEndPoint coordinator, NodeProfile profile, IStageView stage, NodeStatus status, ILogger logger,
        ReadOnlyMemory<byte> coordinatorKey = default, HopLinks? links = null)
    {
        _links = links ?? new HopLinks();
        _transport = transport; _coordinator = coordinator; _profile = profile; _stage = stage; _status = status; _logger = logger;
        _coordinatorKey = coordinatorKey;
    }

    /// <summary>The model source the coordinator announced at the last registration (<see cref="Welcome.ModelSource"/>; empty: none).</summary>
    public string ModelSource { get; private set; } = "";

    /// <summary>True while registered over a live connection.</summary>
    public bool IsConnected => _peer is { IsConnected: true };

    /// <summary>
    /// True when <paramref name="peer"/> is our connection to the coordinator (also while a re-registration is still
    /// waiting for its Welcome): only the coordinator may tell this node which peers it vouches for.
    /// </summary>
    public bool IsCoordinator(IPeer peer) => ReferenceEquals(peer, _peer) || peer.RemoteEndPoint.Equals(_coordinator);

    /// <summary>
    /// An endpoint "host:port" the coordinator sent (a peer's, a relay's) as an address to send to; a wildcard host stands
    /// for the coordinator's own address as this node knows it. Null when it does not parse.
    /// </summary>
    public IPEndPoint? Resolve(string endpoint)
    {
        if (!EndPoints.TryParse(endpoint, out var parsed)) return null;
        return parsed!.Address.Equals(IPAddress.Any) || parsed.Address.Equals(IPAddress.IPv6Any) ? new IPEndPoint(_coordinator.Address, parsed.Port) : parsed;
    }

    /// <summary>The last heartbeat sent (read by the node's gauges).</summary>
    public Heartbeat? LastHeartbeat => _lastHeartbeat;

    /// <summary>Raised with the member keys a <see cref="Welcome"/> carries, before the registration completes.</summary>
    public event Action<PeerKeys>? MembersVouched;

    /// <summary>Heartbeat period; the coordinator's <see cref="Welcome"/> may set it (default 500 ms).</summary>
    public TimeSpan HeartbeatInterval => TimeSpan.FromMilliseconds(Interlocked.Read(ref _heartbeatMs));

    /// <summary>
    /// The self-benchmark measured after registration (a node without a local checkpoint learns the model's shape from
    /// the model source only then); sent in every heartbeat and in later registrations. 0 until measured.
    /// </summary>
    public double BenchmarkedLayerTokensPerSecond
    {
        get => Volatile.Read(ref _benchmarked);
        set => Volatile.Write(ref _benchmarked, value);
    }

    /// <summary>The registration message as it would be sent now (the held range changes as ranges load).</summary>
    public Hello Hello() => new()
    {
        NodeName = _profile.Name,
        MemoryBudgetBytes = _profile.MemoryBudgetBytes,
        Device = _profile.Devices,
        Threads = _profile.Threads,
        LayerTokensPerSecond = BenchmarkedLayerTokensPerSecond > 0 ? BenchmarkedLayerTokensPerSecond : _profile.LayerTokensPerSecond,
        PinnedRange = _profile.PinnedRange,
        HeldRange = _stage.Range,
        DataEndpoint = _profile.DataEndpoint,
        ModelId = _profile.ModelId,
        SharesWeights = _profile.SharesWeights,
        LayerWeightBytes = _profile.LayerWeightBytes,
        KvBytesPerTokenPerLayer = _profile.KvBytesPerTokenPerLayer,
        OffersRelay = _profile.OffersRelay,
        DraftModel = _profile.DraftModel,
    };

    /// <summary>This node's relay for others (<c>--relay</c>); null when it does not volunteer. Heartbeats report its usage.</summary>
    public VolunteerRelay? Relay { get; init; }

    /// <summary>Connects to the coordinator and registers; retries with exponential back-off (capped at 5 s).</summary>
    /// <exception cref="PeerRefusedException">The coordinator refused this node, or failed to prove the pinned key (fatal: wrong secret, wrong model, an impostor).</exception>
    public async Task RegisterAsync(CancellationToken ct)
    {
        var delay = FirstRetry;
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            try
            {
                var peer = await _transport.ConnectAsync(_coordinator, _coordinatorKey, ct).ConfigureAwait(false);
                var reply = await peer.RequestAsync(Envelope.Create(Hello()), HelloTimeout, ct).ConfigureAwait(false);
                switch (reply.Body)
                {
                    case Welcome w:
                        if (w.Members is { } members) MembersVouched?.Invoke(members);
                        _status.NodeId = w.NodeId;
                        ModelSource = w.ModelSource;
                        if (w.HeartbeatIntervalMs > 0) Interlocked.Exchange(ref _heartbeatMs, w.HeartbeatIntervalMs);
                        _peer = peer;
                        _logger.Registered(w.NodeId, _coordinator.ToString());
                        if (w.ObservedEndpoint.Length > 0 && w.Reachable) _logger.ReachableDirectly(w.ObservedEndpoint);
                        else if (w.ObservedEndpoint.Length > 0) _logger.BehindNat(w.ObservedEndpoint);
                        if (Relay is { } relay)
                        {
                            relay.Registered(w.RelayAccepted);
                            _logger.RelayOffer(w.RelayAccepted ? "accepted: the coordinator may relay hops of other nodes through this one"
                                : "declined: this node is not reachable directly, so it cannot relay for others");
                        }
                        return;
                    case Refused r:
                        throw new PeerRefusedException($"the coordinator refused this node: {r.Reason}");
                    default:
                        throw new PeerDisconnectedException($"unexpected reply {reply.Body.GetType().Name} to Hello");
                }
            }
            catch (PeerRefusedException) { throw; }
            catch (Exception e) when (e is PeerDisconnectedException or TimeoutException)
            {
                _logger.CoordinatorUnreachable(_coordinator.ToString(), e.Message, delay.TotalMilliseconds);
                await Task.Delay(delay, ct).ConfigureAwait(false);
                delay = TimeSpan.FromTicks(Math.Min(MaxRetry.Ticks, delay.Ticks * 2));
            }
        }
    }

    /// <summary>The transport lost <paramref name="peer"/>: when it was the coordinator, register again in the background.</summary>
    public void OnPeerDisconnected(IPeer peer, string reason)
    {
        if (!ReferenceEquals(peer, _peer) || _leaving) return;
        _peer = null;
        _logger.CoordinatorLost(reason);
        _ = ReRegisterAsync();
    }

    private async Task ReRegisterAsync()
    {
        try { await RegisterAsync(_stop.Token).ConfigureAwait(false); }
        catch (Exception e) when (e is OperationCanceledException or PeerRefusedException) { _logger.Fatal(e.Message); }
    }

    /// <summary>Sends a message to the coordinator; dropped (and logged) while there is no connection.</summary>
    public void Send(IMessage body, long sessionId = 0)
    {
        var peer = _peer;
        if (peer is null) { _logger.DroppedNoCoordinator(body.GetType().Name); return; }
        try { peer.Send(Envelope.Create(body, sessionId)); }
        catch (PeerDisconnectedException e) { _logger.DroppedNoCoordinator($"{body.GetType().Name} ({e.Message})"); }
    }

    /// <summary>Tells the coordinator that this node could not run (or hand on) <paramref name="request"/>.</summary>
    /// <param name="nodeId">The node at fault (default this one; the next hop for <see cref="ErrorCode.NextHopUnreachable"/>).</param>
    public void ReportStepFailed(ForwardRequest request, ErrorCode code, string message, int? nodeId = null) =>
        Send(new StepFailed
        {
            JobId = request.JobId, SessionId = request.SessionId, Step = request.Step, NodeId = nodeId ?? _status.NodeId, Code = code, Message = message,
        }, request.SessionId);

    /// <summary>The coordinator asked this node to drain: it takes no new sessions from now on.</summary>
    public void OnDrain(Drain drain)
    {
        _logger.Draining(drain.Reason);
        _status.State = NodeReadiness.Draining;
    }

    /// <summary>
    /// Announces that the node leaves within <paramref name="grace"/> (a reason longer than the protocol allows is cut);
    /// from now on a lost connection is not re-registered.
    /// </summary>
    public void Leave(string reason, TimeSpan grace)
    {
        _leaving = true;
        Send(new Leave { Reason = reason.Length > ProtocolInfo.MaxTextLength ? reason[..ProtocolInfo.MaxTextLength] : reason, GraceMs = (int)grace.TotalMilliseconds });
    }

    /// <summary>Cancels a registration in progress (shutdown).</summary>
    public void Stop()
    {
        _leaving = true;
        _stop.Cancel();
    }

    /// <summary>Stops re-registering and frees the cancellation source.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Stop();
        _stop.Dispose();
    }

    /// <summary>Sends a heartbeat (state, load, KV use, throughput) every <see cref="HeartbeatInterval"/> until <paramref name="ct"/> fires.</summary>
    public async Task RunHeartbeatsAsync(CancellationToken ct)
    {
        using var timer = new PeriodicTimer(HeartbeatInterval);
        long lastTokens = 0;
        var last = Stopwatch.StartNew();
        while (await timer.WaitForNextTickAsync(ct).ConfigureAwait(false))
        {
            if (timer.Period != HeartbeatInterval) timer.Period = HeartbeatInterval;
            var stats = _stage.Stats;
            long tokens = _status.TokensServed;
            double rate = (tokens - lastTokens) / last.Elapsed.TotalSeconds;
            lastTokens = tokens; last.Restart();
            var heartbeat = new Heartbeat
            {
                State = _status.State,
                InFlightSteps = _status.InFlight,
                Sessions = stats?.Sessions ?? 0,
                KvTokensUsed = stats?.KvTokensUsed ?? 0,
                KvTokensCapacity = stats?.KvTokenCapacity ?? 0,
                TokensPerSecond = rate,
                Range = _stage.Range,
                KvBlocksUsed = stats?.KvBlocksUsed ?? 0,
                KvBlocksTotal = stats?.KvBlocksTotal ?? 0,
                WaitingSessions = stats?.WaitingSessions ?? 0,
                Links = _links.Report(),
                LayerTokensPerSecond = BenchmarkedLayerTokensPerSecond,
                Relay = Relay is { Accepted: true } relay ? relay.Usage : null,
            };
            _lastHeartbeat = heartbeat;
            Send(heartbeat);
        }
    }
}
