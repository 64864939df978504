using Swarm.Coordinator.Membership;
using Swarm.Protocol;

namespace Swarm.Coordinator.Placement;

/// <summary>What one evaluation tick of the <see cref="PlacementController"/> decided.</summary>
/// <param name="Dead">Nodes the failure detector declared dead in this tick (in id order): the caller drops their connections and reports them lost.</param>
public sealed record PlacementTick(IReadOnlyList<int> Dead);

/// <summary>
/// When the coordinator runs its placement policy, and what it records: a joining node's range, recovery after a node is
/// lost or leaves, and — on the evaluation tick — failure detection, then filling gaps or (every
/// <see cref="RebalanceInterval"/>, with nothing loading) one rebalancing move. I/O-free and not thread-safe (the
/// coordinator calls it under its placement lock): every range it gives a node is recorded in the registry and handed to
/// <see cref="Assigned"/>, which sends it (the coordinator) or schedules its loading (the simulator). The coordinator and
/// <c>swarm sim</c> run this same class.
/// </summary>
internal sealed class PlacementController
{
    /// <summary>How often a fully covered swarm is checked for a rebalancing move (10 s).</summary>
    public static readonly TimeSpan RebalanceInterval = TimeSpan.FromSeconds(10);

    private readonly NodeRegistry _registry;
    private readonly IPlacementPolicy _policy;
    private readonly TimeProvider _time;
    private readonly int _numLayers;
    private long _lastRebalance;

    /// <param name="registry">The membership table the decisions read and record into.</param>
    /// <param name="policy">The placement policy.</param>
    /// <param name="time">Clock of the rebalancing interval.</param>
    public PlacementController(NodeRegistry registry, IPlacementPolicy policy, TimeProvider time)
    {
        _registry = registry;
        _policy = policy;
        _time = time;
        _numLayers = policy.Shape.NumLayers;
        _lastRebalance = time.GetTimestamp();
    }

    /// <summary>Called with every range given to a node (after it is recorded in the registry).</summary>
    public event Action<RangeAssignment>? Assigned;

    /// <summary>The policy in use.</summary>
    public IPlacementPolicy Policy => _policy;

    /// <summary>
    /// Records a node that passed registration. One that already holds layers (<paramref name="held"/>: a coordinator
    /// restart) keeps serving them; otherwise it gets its pinned range or the policy's join range, or none when no range
    /// fits its memory (it stands by). Returns the range it serves or was given.
    /// </summary>
    public LayerRange? Join(NodeInfo info, LayerRange? held = null)
    {
        if (held is { } h)
        {
            _registry.Register(info, h);
            return h;
        }
        _registry.Register(info);
        var range = info.PinnedRange ?? _policy.ChooseJoinRange(_registry.PlacementView(), _registry.Get(info.Id)!.ToPlacementNode());
        if (range is { } r) Assign(new RangeAssignment(info.Id, null, r, PlacementReason.Join));
        return range;
    }

    /// <summary>The node reported its range loaded: it serves it from now on (a range it did not expect is recorded first).</summary>
    public void RangeReady(int id, LayerRange range)
    {
        if (_registry.Get(id)?.Range != range) _registry.AssignRange(id, range);
        _registry.MarkServing(id);
    }

    /// <summary>The node announced it leaves: it takes no new jobs and its layers are re-covered elsewhere now.</summary>
    public void Leaving(int id)
    {
        _registry.BeginDrain(id);
        Recover();
    }

    /// <summary>
    /// The node's connection closed: a draining node has left, any other one failed. True when it is lost (left or dead):
    /// the caller then calls <see cref="Lost"/>.
    /// </summary>
    public bool Disconnected(int id)
    {
        var snap = _registry.Get(id);
        if (snap is not null && snap.State == NodeStatus.Draining) _registry.MarkLeft(id);
        else _registry.ReportFailure(id);
        return _registry.Get(id)?.State is NodeStatus.Left or NodeStatus.Dead;
    }

    /// <summary>A node is gone (dead, left, banned): its layers are re-covered.</summary>
    public void Lost(int id) => Recover();

    /// <summary>
    /// The evaluation tick (every 250 ms in the coordinator): runs the failure detector; fills gaps when some layer is not
    /// served, else, every <see cref="RebalanceInterval"/>, makes at most one rebalancing move (none while a node is loading).
    /// Nodes it declares dead are returned for the caller to drop and report lost (<see cref="Lost"/>).
    /// </summary>
    public PlacementTick Tick()
    {
        var dead = new List<int>();
        foreach (var t in _registry.Evaluate())
            if (t.BecameDead) dead.Add(t.After.Id);
        return new PlacementTick(dead);
    }

    /// <summary>After the tick's dead nodes were handled: fill gaps, or rebalance when it is time.</summary>
    public void Maintain()
    {
        if (!_registry.ServingCoverage(_numLayers).IsCovered) Recover();
        else if (_time.GetElapsedTime(_lastRebalance) > RebalanceInterval) Rebalance();
    }

    /// <summary>Re-covers layers no serving node holds by (re)assigning nodes with spare memory.</summary>
    public void Recover()
    {
        foreach (var move in _policy.Recover(_registry.PlacementView())) Assign(move);
    }

    /// <summary>
    /// At most one move, and only when it raises the swarm's weakest per-layer throughput by the policy's factor (1.2×),
    /// so ranges do not flap; nothing moves while another node is still loading.
    /// </summary>
    public void Rebalance()
    {
        _lastRebalance = _time.GetTimestamp();
        if (_registry.Snapshot().Any(n => n.State == NodeStatus.Loading)) return;
        if (_policy.Rebalance(_registry.PlacementView()) is { } move) Assign(move);
    }

    private void Assign(RangeAssignment move)
    {
        _registry.AssignRange(move.NodeId, move.To);
        Assigned?.Invoke(move);
    }
}
