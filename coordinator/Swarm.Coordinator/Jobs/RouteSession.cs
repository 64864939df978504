using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Routing;
using Swarm.Coordinator.Verification;
using Swarm.Protocol;
using Swarm.Transport;
using WireLayerRange = Swarm.Protocol.LayerRange;

namespace Swarm.Coordinator.Jobs;

/// <summary>
/// A job's session on one route: the id every stage keys the job's KV cache by, the in-flight count the job holds on
/// each node of the route (so the router spreads other jobs away from it), the step exchange (send to the first hop,
/// await this step's reply), and the release (in-flight back, <see cref="CloseSession"/> to every hop so the stages
/// free the cache). Opened by <see cref="RouteSessionFactory"/>; one step at a time. A spot-checked session also has a
/// shadow session (<see cref="Check"/>): every step's input to the checked hop is copied to the shadow (by the coordinator
/// for the first hop, else by the hop before it, told by <see cref="ShadowCopy"/>), and replies of such side sessions
/// are kept in the job's inbox for <see cref="AwaitSideReplyAsync"/> instead of being dropped. The shadow session stays
/// open while checks of its steps are still waiting to be judged (<see cref="CheckStarted"/>, <see cref="CheckSettled"/>),
/// even after the check ended or the session was released, and is closed when the last of them settles.
/// </summary>
internal sealed class RouteSession
{
    /// <summary>How often a step past its patience checks again whether a node of the route has gone silent.</summary>
    public static readonly TimeSpan SilenceRecheckInterval = TimeSpan.FromMilliseconds(100);

    private readonly NodeRegistry _registry;
    private readonly IStepChannel _channel;
    private readonly JobReplyInbox _inbox;
    private readonly TimeProvider _time;
    private readonly TimeSpan _stepTimeout;
    private SpotCheckPlan? _openShadow;   // the shadow session not closed yet
    private int _checksOutstanding;       // checked steps sent whose check has not settled
    private int _released;

    /// <param name="wireRoute">The route's hops as sent to the nodes (<see cref="WireHops"/>, planned by the hop path planner); null: <see cref="WireHops"/> of <paramref name="route"/>, all direct.</param>
    internal RouteSession(Route route, long id, NodeRegistry registry, IStepChannel channel, JobReplyInbox inbox, TimeProvider time, TimeSpan stepTimeout,
        Hop[]? wireRoute = null, SpotCheckPlan? check = null)
    {
        Check = check;
        _openShadow = check;
        Route = route;
        Id = id;
        _registry = registry;
        _channel = channel;
        _inbox = inbox;
        _time = time;
        _stepTimeout = stepTimeout;
        WireRoute = wireRoute ?? WireHops(route, registry);
        foreach (var n in route.NodeIds) _registry.AdjustInFlight(n, +1);
        if (check is not null) _registry.AdjustInFlight(check.Shadow.NodeId, +1);
        inbox.Watch(id, route);
    }

    /// <summary>The hops of <paramref name="route"/> as the nodes see them: each node's endpoint, layers and key (paths not planned yet).</summary>
    public static Hop[] WireHops(Route route, NodeRegistry registry) => [.. route.Hops.Select(h => new Hop
    {
        NodeId = h.NodeId,
        Endpoint = registry.Get(h.NodeId)?.Info.Endpoint ?? "",
        Layers = new WireLayerRange(h.Layers.Start, h.Layers.End),
        Key = registry.Get(h.NodeId)?.Info.Key,
    })];

    /// <summary>The session's spot check, or null (not checked, or the check was ended).</summary>
    public SpotCheckPlan? Check { get; private set; }

    /// <summary>The job's channel to the nodes (spot checks send their side steps through it).</summary>
    internal IStepChannel Channel => _channel;

    /// <summary>The route.</summary>
    public Route Route { get; }

    /// <summary>The session id (<see cref="ForwardRequest.SessionId"/>).</summary>
    public long Id { get; }

    /// <summary>The route as it travels in <see cref="ForwardRequest.Route"/>.</summary>
    public Hop[] WireRoute { get; }

    /// <summary>Id of the route's first hop, which receives the steps.</summary>
    public int FirstHop => Route.Hops[0].NodeId;

    /// <summary>
    /// Sends <paramref name="request"/> to the first hop and waits for this step's reply on this session: a
    /// <see cref="TokenResult"/> or <see cref="StepFailed"/> from the route, or the inbox's notice that a node of the route
    /// was lost. With a <paramref name="patience"/>, a step still unanswered after it fails as soon as a node of the
    /// route is suspected by the failure detector (silent), instead of waiting for the step timeout or for the node to
    /// be declared dead; the reply is then a <see cref="StepFailed"/> with <see cref="ErrorCode.Timeout"/> naming it.
    /// </summary>
    /// <exception cref="PeerDisconnectedException">The first hop is not connected.</exception>
    /// <exception cref="TimeoutException">No reply within the step timeout.</exception>
    public async Task<IMessage> ExchangeAsync(ForwardRequest request, TimeSpan? patience, CancellationToken ct)
    {
        long started = _time.GetTimestamp();
        // Both clocks start before the send, so time that passes while sending counts.
        using var deadline = new CancellationTokenSource(_stepTimeout, _time);
        using var wait = CancellationTokenSource.CreateLinkedTokenSource(ct, deadline.Token);
        var check = patience is { } p ? new CancellationTokenSource(p, _time) : null;
        try
        {
            if (Check is { } c)
            {
                if (c.HopIndex == 0) SendSide(c.Shadow.NodeId, request with { SessionId = c.ShadowSession, Route = [c.Shadow] });
                else request = request with { Shadow = new ShadowCopy { RouteLength = WireRoute.Length - c.HopIndex, Shadow = c.Shadow, SessionId = c.ShadowSession } };
            }
            _channel.Send(FirstHop, request, Id);
            // A lost-node notice that arrived between steps (kept while checks were collected) fails this step.
            if (_inbox.TakeKept(m => Answers(m, request.Step)) is { } early) return early;
            while (true)
            {
                IMessage reply;
                if (check is null) reply = await _inbox.Reader.ReadAsync(wait.Token).ConfigureAwait(false);
                else
                {
                    using var either = CancellationTokenSource.CreateLinkedTokenSource(wait.Token, check.Token);
                    try { reply = await _inbox.Reader.ReadAsync(either.Token).ConfigureAwait(false); }
                    catch (OperationCanceledException) when (check.IsCancellationRequested && !wait.IsCancellationRequested)
                    {
                        while (_inbox.Reader.TryRead(out var waiting))
                        {
                            if (Answers(waiting, request.Step)) return waiting;
                            Keep(waiting);
                        }
                        if (SilentNode() is { } silent)
                            return new StepFailed
                            {
                                JobId = request.JobId, SessionId = Id, Step = request.Step,
                                NodeId = silent, Code = ErrorCode.Timeout,
                                Message = $"no reply after {_time.GetElapsedTime(started).TotalMilliseconds:F0} ms and node {silent} has stopped sending heartbeats",
                            };
                        check.Dispose();
                        check = new CancellationTokenSource(SilenceRecheckInterval, _time);
                        continue;
                    }
                }
                if (Answers(reply, request.Step)) return reply;
                Keep(reply); // a side session's reply; anything else is a late reply from an abandoned session or step
            }
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            throw new TimeoutException($"no reply to step {request.Step} within {_stepTimeout.TotalSeconds:F1} s");
        }
        finally
        {
            check?.Dispose();
        }
    }

    /// <summary>Sends a side session's step (a shadow copy, an arbitration replay); a node that is not connected fails it later by timeout.</summary>
    public void SendSide(int nodeId, ForwardRequest request)
    {
        try { _channel.Send(nodeId, request, request.SessionId); }
        catch (PeerDisconnectedException) { }
    }

    /// <summary>
    /// The reply of side session <paramref name="sessionId"/> to <paramref name="step"/> (kept from earlier reads, or read
    /// now), or null when none arrives within <paramref name="timeout"/>.
    /// </summary>
    public async Task<IMessage?> AwaitSideReplyAsync(long sessionId, int step, TimeSpan timeout, CancellationToken ct)
    {
        bool Match(IMessage m) => m switch
        {
            TokenResult tr => tr.SessionId == sessionId && tr.Step == step,
            StepFailed sf => sf.SessionId == sessionId && sf.Step == step,
            _ => false,
        };
        if (_inbox.TakeKept(Match) is { } found) return found;
        using var deadline = new CancellationTokenSource(timeout, _time);
        using var wait = CancellationTokenSource.CreateLinkedTokenSource(ct, deadline.Token);
        try
        {
            while (true)
            {
                var reply = await _inbox.Reader.ReadAsync(wait.Token).ConfigureAwait(false);
                if (Match(reply)) return reply;
                Keep(reply);
            }
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !ct.IsCancellationRequested) { return null; }
    }

    /// <summary>
    /// Ends the spot check: later steps are no longer copied, and the shadow session is closed — once the checks of the
    /// steps already copied have settled, if some have not.
    /// </summary>
    public void EndCheck()
    {
        if (Check is null) return;
        Check = null;
        if (_checksOutstanding == 0) CloseShadow();
    }

    /// <summary>A checked step was answered by the route; its check waits for the shadow (the shadow session stays open until it settles).</summary>
    public void CheckStarted() => _checksOutstanding++;

    /// <summary>A checked step's check was judged or dropped; the last one after <see cref="EndCheck"/> (or <see cref="Release"/>) closes the shadow.</summary>
    public void CheckSettled()
    {
        if (_checksOutstanding > 0) _checksOutstanding--;
        if (Check is null && _checksOutstanding == 0) CloseShadow();
    }

    /// <summary>True while the shadow session is open (checks running or still to be judged).</summary>
    public bool ShadowOpen => _openShadow is not null;

    private void CloseShadow()
    {
        if (_openShadow is not { } c) return;
        _openShadow = null;
        _registry.AdjustInFlight(c.Shadow.NodeId, -1);
        CloseSide(c.Shadow.NodeId, c.ShadowSession);
    }

    private void CloseSide(int nodeId, long sessionId)
    {
        try { _channel.Send(nodeId, new CloseSession { SessionId = sessionId }, sessionId); }
        catch (PeerDisconnectedException) { }
    }

    /// <summary>Keeps a side session's reply (or a lost-node notice) in the job's inbox; a late reply of this session to an earlier step is dropped.</summary>
    private void Keep(IMessage reply)
    {
        if (SessionOf(reply) != Id || reply is StepFailed { Step: -1 }) _inbox.Keep(reply);
    }

    private static long SessionOf(IMessage m) => m switch { TokenResult tr => tr.SessionId, StepFailed sf => sf.SessionId, _ => 0 };

    private bool Answers(IMessage m, int step) => m switch
    {
        TokenResult tr => tr.SessionId == Id && tr.Step == step,
        StepFailed sf => sf.SessionId == Id && (sf.Step == step || sf.Step == -1),
        _ => false,
    };

    /// <summary>A node of the route the failure detector no longer considers alive (suspect, dead or gone), or null.</summary>
    public int? SilentNode() =>
        Route.NodeIds.Cast<int?>().FirstOrDefault(id => _registry.Get(id!.Value) is not { } n || n.Health != NodeHealth.Alive);

    /// <summary>
    /// Gives back the in-flight count and tells every hop to close the session (a hop that is not connected has lost it
    /// anyway); ends the spot check (see <see cref="EndCheck"/>). Idempotent.
    /// </summary>
    public void Release()
    {
        if (Interlocked.Exchange(ref _released, 1) == 1) return;
        _inbox.Unwatch(Id);
        EndCheck();
        foreach (var n in Route.NodeIds)
        {
            _registry.AdjustInFlight(n, -1);
            try { _channel.Send(n, new CloseSession { SessionId = Id }, Id); }
            catch (PeerDisconnectedException) { }
        }
    }
}
