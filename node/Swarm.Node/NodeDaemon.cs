using System.Net;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Swarm.Checkpoints;
using Swarm.Engine;
using Swarm.Model;
using Swarm.Node.Sharing;
using Swarm.Node.Telemetry;
using Swarm.Protocol;
using Swarm.Transport;
using Swarm.Transport.Security;
using Swarm.Weights;

namespace Swarm.Node;

/// <summary>
/// The worker daemon, as a hosted service. It wires three parts and routes inbound messages to them:
/// the <see cref="CoordinatorLink"/> (registration, re-registration, heartbeats, leave/drain), the
/// <see cref="StageWorker"/> (the compute thread: loads the range it is given or pinned to and serves the steps of
/// many sessions in batched iterations) and the <see cref="HopForwarder"/> (hands finished steps on: hidden states to
/// the next hop, tokens and errors to the coordinator). On shutdown it drains: it tells the coordinator it is
/// leaving and finishes the steps it already accepted.
/// </summary>
public sealed class NodeDaemon : BackgroundService
{
    private const int OutboxCapacity = 1024;
    private static readonly TimeSpan DrainGrace = TimeSpan.FromSeconds(5), PartStopTimeout = TimeSpan.FromSeconds(5);

    private readonly NodeOptions _options;
    private readonly ILogger _logger;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly NodeStatus _status = new();
    private readonly CancellationTokenSource _stopping = new(), _abandon = new();
    private readonly VouchedPeers _vouched = new();
    private NodeIdentity? _identity;
    private ITransport? _transport;
    private Checkpoint? _checkpoint;
    private CoordinatorLink? _link;
    private StageWorker? _worker;
    private HopForwarder? _forwarder;
    private IDisposable? _observed;
    private readonly WeightCache _cache = new();
    private readonly TensorShareServer _share;
    private AssignedStageFetcher? _fetcher;
    private VolunteerRelay? _relay;

    public NodeDaemon(NodeOptions options, ILogger<NodeDaemon> logger, IHostApplicationLifetime lifetime)
    {
        _options = options; _logger = logger; _lifetime = lifetime;
        _share = new TensorShareServer(_cache, options.SharesWeights ? new UploadRateLimiter(options.ShareBytesPerSecond) : null, logger);
    }

    /// <summary>Id the coordinator gave this node (0 before registration).</summary>
    public int NodeId => _status.NodeId;

    /// <summary>Where this node listens for node-to-node traffic.</summary>
    public IPEndPoint? DataEndPoint => _transport?.LocalEndPoint;

    // Read by NodeInstrumentation's observable gauges (any thread).
    internal Heartbeat? LastHeartbeat => _link?.LastHeartbeat;
    internal int InFlight => _status.InFlight;
    internal NodeReadiness State => _status.State;
    internal TransportCounters? TransportCounters => _transport?.Counters;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            await RunAsync(stoppingToken);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested) { }
        catch (Exception e) when (e is CheckpointException or TorchLoadException or PeerRefusedException or ArgumentException or IdentityException or WeightFetchException)
        {
            _logger.Fatal(e.Message);
            Environment.ExitCode = 1;
            _lifetime.StopApplication();
        }
    }

    private async Task RunAsync(CancellationToken ct)
    {
        NodeOptions.TryParseEndPoint(_options.Coordinator, out var coordinator);
        var listen = _options.ListenEndPoint;
        var weights = _options.WeightFormat;
        TorchRuntime.Initialize(_options.Threads);
        _checkpoint = _options.FetchesWeights ? null : Checkpoint.Open(_options.Model);
        var config = _checkpoint?.Config;
        LayerRange? pinned = null;
        if (_options.Layers is not null && config is not null)
        {
            LayerRange.TryParse(_options.Layers, out var layers);
            if (layers.End > config.NumLayers)
                throw new ArgumentException($"--layers {_options.Layers}: the model has only {config.NumLayers} layers");
            pinned = layers;
        }
        if (string.IsNullOrEmpty(_options.Secret)) _logger.NoSecret();
        _identity = NodeIdentity.LoadOrCreate(_options.IdentityPath);
        _logger.Identity(_identity.Fingerprint, _identity.FilePath ?? "", _identity.Created ? "created" : "loaded");
        var transport = LiteNetTransport.Start(new TransportOptions
        {
            BindAddress = listen!.Address, Port = listen.Port, Secret = _options.Secret, Identity = _identity, AuthorizeInbound = _vouched.Authorize,
        }, _logger);
        _transport = transport;
        _fetcher = new AssignedStageFetcher(_cache, _share, transport, _options.Advertise ?? transport.LocalEndPoint.ToString(), _logger);

        var outbox = new BoundedHandoff<Outgoing>(OutboxCapacity);
        var worker = new StageWorker(_checkpoint, _options, weights, outbox, _status, _logger, _abandon.Token);
        _worker = worker;
        _observed = NodeInstrumentation.Observe(this);
        worker.Start();

        // Without a local checkpoint the model's shape is unknown until registration: the Hello announces no throughput,
        // the benchmark runs once the coordinator names the source (MeasureAgainstSourceAsync) and goes out in heartbeats.
        double layerTokensPerSecond = config is null ? 0 : SelfBenchmark.LayerTokensPerSecond(config, weights);
        if (config is null) _logger.StartedWithoutModel(transport.LocalEndPoint.ToString());
        else _logger.Started(transport.LocalEndPoint.ToString(), layerTokensPerSecond);
        if (pinned is { } range && _checkpoint is not null) worker.Load(range, 0);

        var hopLinks = new HopLinks();
        _relay = _options.Relay ? new VolunteerRelay(listen.Address, m => _link?.Send(m), _logger) : null;
        var link = new CoordinatorLink(transport, coordinator!, NodeProfile.From(_options, transport.LocalEndPoint, config, layerTokensPerSecond),
            worker, _status, _logger, _options.PinnedCoordinatorKey, hopLinks) { Relay = _relay };
        _link = link;
        var forwarder = new HopForwarder(transport, link, _status, outbox, hopLinks, _options.SimulateLatencyMs, _logger, _stopping.Token);
        _forwarder = forwarder;
        forwarder.Start();
        transport.PeerDisconnected += (peer, reason) =>
        {
            forwarder.Forget(peer);
            link.OnPeerDisconnected(peer, reason);
        };

        link.MembersVouched += keys => _vouched.Update(keys);
        await link.RegisterAsync(ct);
        if (_options.FetchesWeights && link.ModelSource.Length == 0)
            throw new ArgumentException("this node has no --model and the coordinator announces no model source (it was started with " +
                                        "--model DIR, not --model-url): start the node with --model DIR");
        if (_options.FetchesWeights) await MeasureAgainstSourceAsync(link, weights, ct);
        var heartbeats = link.RunHeartbeatsAsync(ct);
        var expiry = worker.ExpireIdleSessionsAsync(ct);
        await foreach (var msg in transport.Inbound.ReadAllAsync(ct))
            Dispatch(msg, link, worker);
        await Task.WhenAll(heartbeats, expiry);
    }

    private void Dispatch(InboundMessage msg, CoordinatorLink link, StageWorker worker)
    {
        switch (msg.Envelope.Body)
        {
            case ForwardRequest req:
                if (_status.State == NodeReadiness.Draining && req.StartPosition == 0)
                {
                    link.ReportStepFailed(req, ErrorCode.ShuttingDown, "this node is draining and takes no new sessions");
                    return;
                }
                _status.StepAccepted();
                if (!worker.TrySubmit(req, msg.Envelope))
                {
                    _status.StepHandled();
                    link.ReportStepFailed(req, ErrorCode.Overloaded, "step queue full");
                }
                break;
            case AssignRange a when _checkpoint is null:
                _ = FetchAndLoadAsync(a, link, worker);
                break;
            case TensorRequest r:
                _share.Handle(msg.Peer, msg.Envelope, r, _stopping.Token);
                break;
            case AssignRange a:
                worker.Load(a.Range, a.AssignmentId);
                break;
            case CloseSession c:
                worker.Close(c.SessionId);
                break;
            case Drain d:
                link.OnDrain(d);
                break;
            case PeerKeys k when link.IsCoordinator(msg.Peer):
                _vouched.Update(k);
                break;
            case Introduce i when link.IsCoordinator(msg.Peer):
                _ = PunchAsync(i, link);
                break;
            case RelayControl r when link.IsCoordinator(msg.Peer):
                Relay(msg, r);
                break;
            case Welcome or Ack or TensorChunk:
                break;
            default:
                _logger.Unexpected(msg.Envelope.Body.GetType().Name, msg.Peer.RemoteEndPoint.ToString());
                break;
        }
    }

    /// <summary>
    /// The coordinator introduces a peer that will connect to this node (hole punching) or a relay that will forward its
    /// connection: a few datagrams from this node's socket open its NAT toward the target.
    /// </summary>
    private async Task PunchAsync(Introduce introduce, CoordinatorLink link)
    {
        if (link.Resolve(introduce.Target) is not { } target || _transport is not { } transport) return;
        _logger.Introduced(introduce.PeerNodeId, introduce.Path == HopPath.Relayed ? "through a relay" : "directly (punching)", target.ToString());
        try { await transport.PunchAsync(target, _stopping.Token); }
        catch (OperationCanceledException) { }
    }

    /// <summary>The coordinator opens or closes a relayed hop on this node (<c>--relay</c>); an Open is answered either way.</summary>
    private void Relay(InboundMessage msg, RelayControl control)
    {
        var reply = _relay is not null ? _relay.Handle(control)
            : control.Action == RelayControlAction.Open ? new RelayControl { Action = RelayControlAction.Closed, HopId = control.HopId, Reason = "this node was started without --relay" }
            : null;
        if (reply is null) return;
        try { msg.Peer.Send(msg.Envelope.CreateReply(reply)); }
        catch (PeerDisconnectedException) { } // the coordinator went away; it re-plans the hop
    }

    /// <summary>
    /// Fetches the assigned range's tensors from the announced source and hands the verified folder to the worker.
    /// A tensor that cannot be fetched or verified means the node cannot serve: it says why, tells the coordinator
    /// (in its <see cref="Leave"/>) and exits 1 — it never serves weights that did not verify.
    /// </summary>
    /// <remarks>
    /// A node that already serves a range (a move) keeps serving it while the new range's tensors arrive; the worker
    /// switches once they are all verified.
    /// </remarks>
    private async Task FetchAndLoadAsync(AssignRange assign, CoordinatorLink link, StageWorker worker)
    {
        if (worker.Range is { } serving) _logger.Moving(assign.Range.ToString(), serving.ToString());
        else _status.State = NodeReadiness.Loading;
        try
        {
            var checkpoint = await _fetcher!.FetchAsync(link.ModelSource, assign, _stopping.Token);
            worker.Load(assign.Range, assign.AssignmentId, checkpoint);
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested) { }
        catch (Exception e) when (e is WeightFetchException or CheckpointException or ArgumentException or IOException)
        {
            string reason = $"refusing to serve layers {assign.Range}: {e.Message}";
            _logger.Fatal(reason);
            link.Leave(reason.Length > 4000 ? reason[..4000] : reason, TimeSpan.Zero);
            Environment.ExitCode = 1;
            _lifetime.StopApplication();
        }
    }

    /// <summary>
    /// For a node without a local checkpoint, once the coordinator named the model source: reads the model's
    /// <c>config.json</c> from it, checks that <c>--memory</c> holds one layer (else the node leaves, saying why) and
    /// runs the self-benchmark the coordinator then hears in heartbeats (placement and routing use it).
    /// </summary>
    private async Task MeasureAgainstSourceAsync(CoordinatorLink link, WeightFormat weights, CancellationToken ct)
    {
        var configUri = ModelSource.Parse(link.ModelSource).FileUri("config.json");
        ModelConfig config;
        try
        {
            using var client = HttpRangeReader.CreateHttpClient();
            byte[] json = (await new HttpRangeReader(client).GetFileAsync(configUri, 1 << 20, optional: false, ct))!;
            config = ModelConfig.Parse(json, configUri.AbsoluteUri);
        }
        catch (Exception e) when (e is WeightFetchException or CheckpointException)
        {
            link.Leave($"cannot read the swarm's model: {e.Message}", TimeSpan.Zero);
            throw;
        }
        if (MemoryBudget.Problem(_options, config) is { } problem)
        {
            link.Leave(problem, TimeSpan.Zero);
            throw new ArgumentException(problem);
        }
        double measured = SelfBenchmark.LayerTokensPerSecond(config, weights);
        link.BenchmarkedLayerTokensPerSecond = measured;
        _logger.Benchmarked(config.NumLayers, config.HiddenSize, measured);
    }

    /// <summary>Graceful stop (SIGTERM): announce the leave, stop taking new sessions, finish accepted steps.</summary>
    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        _status.State = NodeReadiness.Draining;
        _observed?.Dispose();
        _link?.Leave("shutting down", DrainGrace);
        await WaitAsync(_status.WhenIdleAsync(), DrainGrace, part: null);
        _logger.Stopping(_status.InFlight);
        _link?.Stop();
        _stopping.Cancel();
        await base.StopAsync(cancellationToken);
        _worker?.Complete();
        if (_worker is not null && !await WaitAsync(_worker.Completion, PartStopTimeout, "the compute thread"))
            _abandon.Cancel(); // the compute thread may be blocked on a full outbox: let it drop what is left
        if (_forwarder is not null) await WaitAsync(_forwarder.Completion, PartStopTimeout, "the hop forwarder");
        if (_transport is not null) await _transport.DisposeAsync();
        _relay?.Dispose();
        _identity?.Dispose();
        _checkpoint?.Dispose();
    }

    /// <summary>Waits for <paramref name="task"/> at most <paramref name="timeout"/>; false (logged when <paramref name="part"/> is named) on time-out.</summary>
    private async Task<bool> WaitAsync(Task task, TimeSpan timeout, string? part)
    {
        try
        {
            await task.WaitAsync(timeout);
            return true;
        }
        catch (TimeoutException)
        {
            if (part is not null) _logger.StopTimedOut(part, timeout.TotalSeconds);
            return false;
        }
    }

    public override void Dispose()
    {
        _link?.Dispose();
        _stopping.Dispose();
        _abandon.Dispose();
        base.Dispose();
    }
}
