using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Swarm.Node.Telemetry;
using Swarm.Protocol;
using Swarm.Telemetry;
using Swarm.Transport;
using Swarm.Transport.Security;

namespace Swarm.Node;

/// <summary>
/// Hands on what the compute thread finished, off the compute thread: a step's hidden states go to the next hop
/// (converted to the step's wire dtype and serialized here), a sampled token or an error goes to the coordinator,
/// and a next hop that cannot be reached is reported as <see cref="ErrorCode.NextHopUnreachable"/>. Keeps one
/// connection per next-hop endpoint: the hop's own endpoint for a direct or punched hop, the relay's for a relayed one
/// (<see cref="Hop.Path"/>); <see cref="HopLinks"/> records each link and how it is made. Each step is recorded as a <c>stage.forward</c> span back-dated to when it
/// arrived (steps finish out of order, one batched iteration at a time) and, for a sampled token, its <c>sample</c> child.
/// </summary>
internal sealed class HopForwarder
{
    private readonly ITransport _transport;
    private readonly CoordinatorLink _coordinator;
    private readonly NodeStatus _status;
    private readonly BoundedHandoff<Outgoing> _outbox;
    private readonly int _simulateLatencyMs;
    private readonly ILogger _logger;
    private readonly CancellationToken _stopping;
    private readonly ConcurrentDictionary<string, IPeer> _connected = new();
    private readonly ConcurrentDictionary<string, Task<IPeer>> _connecting = new();
    private readonly HopLinks _links;
    private Task _run = Task.CompletedTask;

    /// <param name="links">Where every link used to a next hop is recorded (heartbeats report them).</param>
    /// <param name="simulateLatencyMs">Delay before each output leaves (emulates a WAN hop on loopback; 0 = none).</param>
    /// <param name="stopping">Cancels connections in progress when the node stops.</param>
    public HopForwarder(ITransport transport, CoordinatorLink coordinator, NodeStatus status, BoundedHandoff<Outgoing> outbox,
        HopLinks links, int simulateLatencyMs, ILogger logger, CancellationToken stopping)
    {
        _transport = transport; _coordinator = coordinator; _status = status; _outbox = outbox; _links = links;
        _simulateLatencyMs = simulateLatencyMs; _logger = logger; _stopping = stopping;
    }

    /// <summary>Completes when the outbox is completed and everything in it was handed on.</summary>
    public Task Completion => _run;

    /// <summary>Starts reading the outbox.</summary>
    public void Start() => _run = Task.Run(RunAsync);

    /// <summary>Forgets a connection that went away (the next step to that endpoint reconnects).</summary>
    public void Forget(IPeer peer)
    {
        foreach (var (endpoint, known) in _connected)
            if (ReferenceEquals(known, peer)) _connected.TryRemove(new KeyValuePair<string, IPeer>(endpoint, known));
    }

    private async Task RunAsync()
    {
        await foreach (var item in _outbox.ReadAllAsync().ConfigureAwait(false))
        {
            try
            {
                switch (item)
                {
                    case FinishedStep step: HandOn(step); break;
                    case CoordinatorNotice notice: _coordinator.Send(notice.Body); break;
                }
            }
            catch (Exception e)
            {
                _logger.ForwarderError(e.GetType().Name, e.Message);
            }
        }
    }

    private void HandOn(FinishedStep finished)
    {
        var (c, arrival) = finished;
        var req = c.Request;
        int nodeId = _status.NodeId;
        using var span = NodeInstrumentation.StartForward(arrival.Envelope, req, nodeId);
        span?.SetStartTime(DateTime.UtcNow - Stopwatch.GetElapsedTime(arrival.Queued));
        span?.SetTag("swarm.queue_ms", Stopwatch.GetElapsedTime(arrival.Queued, arrival.Taken).TotalMilliseconds);
        string outcome = "ok";
        try
        {
            if (c.Error is { } error)
            {
                outcome = error.Code.ToString();
                if (error.Code == ErrorCode.Cancelled) return; // the session was closed: nobody waits for this step
                SwarmTelemetry.RecordFailure(span, NodeInstrumentation.StepFailedEvent, nodeId, error.Message, outcome);
                _coordinator.ReportStepFailed(req, error.Code, error.Message);
                return;
            }
            var output = c.Output!;
            long positions = req.Input.Shape.Length > 1 ? req.Input.Shape[1] : 1;
            _status.AddTokens(positions);
            NodeInstrumentation.Tokens.Add(positions);
            NodeInstrumentation.ForwardDuration.Record(output.Milliseconds / 1000,
                new KeyValuePair<string, object?>(SwarmTelemetry.StepKindTag, req.Kind.ToString().ToLowerInvariant()));
            var timings = req.Timings.Append(new StageTiming { NodeId = nodeId, Milliseconds = output.Milliseconds }).ToArray();
            var fingerprints = req.Fingerprints.Append(output.Fingerprint with { NodeId = nodeId }).ToArray();
            if (output.Token is int || req.Route.Length == 1)
            {
                using (var sample = NodeInstrumentation.Source.StartActivity(NodeInstrumentation.SampleSpan))
                {
                    sample?.SetStartTime(DateTime.UtcNow - TimeSpan.FromMilliseconds(output.SampleMilliseconds));
                    sample?.SetTag("swarm.sampling.greedy", req.Sampling.Temperature <= 0);
                    sample?.SetTag("swarm.token.position", req.StartPosition + positions);
                }
                var result = new TokenResult
                {
                    JobId = req.JobId, SessionId = req.SessionId, Step = req.Step, TokenId = output.Token ?? -1, Timings = timings, Fingerprints = fingerprints,
                    Logprobs = output.Logprobs, InputLogprobs = output.InputLogprobs, HiddenStates = [.. req.CapturedHiddenStates, .. output.HiddenStates],
                    Accepted = output.Accepted, Drafted = output.Drafted,
                };
                if (_simulateLatencyMs > 0) _ = SendLaterAsync(result, req.SessionId);
                else _coordinator.Send(result, req.SessionId);
                return;
            }
            var next = req.Route[1];
            var forward = req with
            {
                Route = req.Route[1..],
                Input = WireDTypeConversion.Convert(output.Hidden!, req.WireDType),
                Timings = timings,
                // Each stage adds the layer outputs it captured; the last one hands them all to the coordinator.
                CapturedHiddenStates = [.. req.CapturedHiddenStates, .. output.HiddenStates],
                Fingerprints = fingerprints,
            };
            span?.SetTag("swarm.next_node.id", next.NodeId);
            if (req.Shadow is { } copy && forward.Route.Length == copy.RouteLength)
            {
                // The next hop is spot-checked: it gets the step without the order; the shadow gets the same input.
                forward = forward with { Shadow = null };
                var shadowed = forward with { SessionId = copy.SessionId, Route = [copy.Shadow], Timings = [], Fingerprints = [] };
                _ = ForwardAsync(copy.Shadow, shadowed, arrival.Envelope with { SessionId = copy.SessionId }, null);
            }
            _ = ForwardAsync(next, forward, arrival.Envelope, span);
        }
        catch (ArgumentException e)
        {
            // The output could not be put on the wire (a bug, not the request's fault): the coordinator recovers the job.
            outcome = nameof(ErrorCode.Internal);
            _coordinator.ReportStepFailed(req, ErrorCode.Internal, e.Message);
        }
        finally
        {
            NodeInstrumentation.StepHandled(outcome);
            _status.StepHandled();
        }
    }

    private async Task SendLaterAsync(TokenResult result, long sessionId)
    {
        try { await Task.Delay(_simulateLatencyMs, _stopping).ConfigureAwait(false); }
        catch (OperationCanceledException) { } // stopping: send at once
        _coordinator.Send(result, sessionId);
    }

    /// <summary>
    /// Sends the step to the next hop (serialized by the transport here, on the forwarder). The envelope carries this
    /// node's <c>stage.forward</c> span as the parent (or, when this node does not trace, the context it received), so
    /// the next node's span joins the job's trace.
    /// </summary>
    private async Task ForwardAsync(Hop next, ForwardRequest forward, Envelope received, Activity? span)
    {
        string? traceParent = span?.Id ?? received.TraceParent;
        string? traceState = span is null ? received.TraceState : span.TraceStateString;
        try
        {
            if (_simulateLatencyMs > 0) await Task.Delay(_simulateLatencyMs, _stopping).ConfigureAwait(false);
            var peer = await NextHopAsync(next).ConfigureAwait(false);
            _links.Used(next.NodeId, peer, next.Path);
            peer.Send(new Envelope { Body = forward, SessionId = received.SessionId, TraceParent = traceParent, TraceState = traceState });
        }
        catch (Exception e) when (e is PeerDisconnectedException or TimeoutException or OperationCanceledException or FormatException)
        {
            // Recorded only while the span is still open (the connection was already up); the coordinator's step span records it in any case.
            SwarmTelemetry.RecordFailure(span, NodeInstrumentation.StepFailedEvent, next.NodeId, e.Message, nameof(ErrorCode.NextHopUnreachable));
            _connected.TryRemove(next.Path == HopPath.Relayed ? next.Via : next.Endpoint, out _);
            string where = next.Path == HopPath.Relayed ? $"via the relay at {next.Via}" : next.Path == HopPath.Punched ? $"at {next.Endpoint} (punched)" : $"at {next.Endpoint}";
            _coordinator.ReportStepFailed(forward, ErrorCode.NextHopUnreachable, $"node {next.NodeId} {where} is unreachable: {e.Message}", next.NodeId);
        }
        catch (ArgumentException e)
        {
            // The transport refused the envelope (e.g. larger than a message may be): the step cannot go on from here.
            _coordinator.ReportStepFailed(forward, ErrorCode.Internal, $"could not send the step to node {next.NodeId}: {e.Message}");
        }
    }

    /// <summary>
    /// <see cref="PeerAsync"/>, again after a short wait when the next hop refuses us: a node that joined a moment ago
    /// may reach a hop before that hop has processed the coordinator's new member list (it is sent before the newcomer
    /// is routable, but travels separately). A refusal that persists is reported after about 1.5 s.
    /// </summary>
    private async ValueTask<IPeer> NextHopAsync(Hop next)
    {
        for (int attempt = 0; ; attempt++)
        {
            try { return await PeerAsync(next).ConfigureAwait(false); }
            catch (PeerRefusedException) when (attempt < RefusalRetryDelaysMs.Length)
            {
                await Task.Delay(RefusalRetryDelaysMs[attempt], _stopping).ConfigureAwait(false);
            }
        }
    }

    private static readonly int[] RefusalRetryDelaysMs = [100, 200, 400, 800];

    /// <summary>
    /// The connection to the hop's endpoint: the cached one while it is up and proves the hop's key, else one connection
    /// attempt shared by all callers. The key the coordinator vouched for in the route is pinned, so a step never goes
    /// to whoever else answers at that endpoint.
    /// </summary>
    private async ValueTask<IPeer> PeerAsync(Hop next)
    {
        string endpoint = next.Path == HopPath.Relayed ? next.Via : next.Endpoint;
        if (_connected.TryGetValue(endpoint, out var known) && known.IsConnected
            && (next.Key is null || PeerKey.AreEqual(known.RemoteKey.Span, next.Key))) return known;
        var connecting = _connecting.GetOrAdd(endpoint, _ => Connect(endpoint, next.Key));
        try
        {
            var peer = await connecting.ConfigureAwait(false);
            _connected[endpoint] = peer;
            return peer;
        }
        finally
        {
            // Done (either way): the next caller that finds no live connection starts a new attempt.
            _connecting.TryRemove(new KeyValuePair<string, Task<IPeer>>(endpoint, connecting));
        }
    }

    private Task<IPeer> Connect(string endpoint, byte[]? key) => _coordinator.Resolve(endpoint) is { } remote
        ? _transport.ConnectAsync(remote, key ?? ReadOnlyMemory<byte>.Empty, _stopping)
        : Task.FromException<IPeer>(new FormatException($"bad endpoint '{endpoint}'"));
}
