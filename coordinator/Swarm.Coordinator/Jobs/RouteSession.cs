using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Routing;
using Swarm.Protocol;
using Swarm.Transport;
using WireLayerRange = Swarm.Protocol.LayerRange;

namespace Swarm.Coordinator.Jobs;

/// <summary>
/// A job's session on one route: the id every stage keys the job's KV cache by, the in-flight count the job holds on
/// each node of the route (so the router spreads other jobs away from it), the step exchange (send to the first hop,
/// await this step's reply), and the release (in-flight back, <see cref="CloseSession"/> to every hop so the stages
/// free the cache). Opened by <see cref="RouteSessionFactory"/>; one step at a time.
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
    private int _released;

    /// <param name="paths">Decides how each node reaches the next (direct, punched, relayed) and introduces them; null: all direct.</param>
    internal RouteSession(Route route, long id, NodeRegistry registry, IStepChannel channel, JobReplyInbox inbox, TimeProvider time, TimeSpan stepTimeout,
        Nat.HopPathPlanner? paths = null)
    {
        Route = route;
        Id = id;
        _registry = registry;
        _channel = channel;
        _inbox = inbox;
        _time = time;
        _stepTimeout = stepTimeout;
        WireRoute = [.. route.Hops.Select(h => new Hop
        {
            NodeId = h.NodeId,
            Endpoint = registry.Get(h.NodeId)?.Info.Endpoint ?? "",
            Layers = new WireLayerRange(h.Layers.Start, h.Layers.End),
            Key = registry.Get(h.NodeId)?.Info.Key,
        })];
        if (paths is not null) WireRoute = paths.Plan(WireRoute);
        foreach (var n in route.NodeIds) _registry.AdjustInFlight(n, +1);
        inbox.Watch(id, route);
    }

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
            _channel.Send(FirstHop, request, Id);
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
                            if (Answers(waiting, request.Step)) return waiting;
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
                // Anything else is a late reply from an abandoned session or step.
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
    /// anyway). Idempotent.
    /// </summary>
    public void Release()
    {
        if (Interlocked.Exchange(ref _released, 1) == 1) return;
        _inbox.Unwatch(Id);
        foreach (var n in Route.NodeIds)
        {
            _registry.AdjustInFlight(n, -1);
            try { _channel.Send(n, new CloseSession { SessionId = Id }, Id); }
            catch (PeerDisconnectedException) { }
        }
    }
}
