using Swarm.Coordinator.Jobs;
using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Placement;
using Swarm.Coordinator.Routing;
using Swarm.Protocol;
using Xunit;

namespace Swarm.Tests.Coordinator;

/// <summary>The pure pieces wired together the way the coordinator service drives them.</summary>
public class CoordinatorScenarioTests
{
    // Node ids, numbered in the alphabetical order of their names (placement and routing break ties by id).
    private const int A = 1, B = 2, C = 3;

    private const int Layers = 12;
    private readonly ManualTimeProvider _clock = new();
    private readonly NodeRegistry _registry;
    private readonly MaxMinThroughputPlacementPolicy _placement;
    private readonly ShortestPathRouter _router = new(new RoutingOptions(), new PowerOfTwoChoicesPolicy(new Random(1)));
    private readonly JobAdmissionController _admission;

    public CoordinatorScenarioTests()
    {
        _registry = new NodeRegistry(new FailureDetectorOptions(), _clock);
        _placement = new MaxMinThroughputPlacementPolicy(new ModelShape(Layers, 1000, 0), new PlacementOptions());
        _admission = new JobAdmissionController(new JobAdmissionOptions { QueueTimeout = TimeSpan.FromSeconds(5) }, _clock);
    }

    private void Join(int id, int fitLayers)
    {
        var node = _registry.Register(new NodeInfo
        {
            Id = id, Name = $"node-{id}", Endpoint = $"127.0.0.1:{7800 + id}", MemoryBudgetBytes = fitLayers * 1000L, LayerThroughput = 1000,
        });
        var range = _placement.ChooseJoinRange(_registry.PlacementView(), node.ToPlacementNode());
        Assert.NotNull(range);
        _registry.AssignRange(id, range!.Value);
        _registry.MarkServing(id);
    }

    /// <summary>Time passes; every node but <paramref name="silent"/> heartbeats; the detector runs every 250 ms.</summary>
    private List<NodeTransition> Pass(double ms, params int[] silent)
    {
        var changes = new List<NodeTransition>();
        for (double t = 0; t < ms; t += 250)
        {
            _clock.AdvanceMs(250);
            foreach (var n in _registry.Snapshot())
                if (!silent.Contains(n.Id) && n.State != NodeStatus.Dead) _registry.Heartbeat(n.Id, 2);
            changes.AddRange(_registry.Evaluate());
        }
        return changes;
    }

    private void Apply(IEnumerable<RangeAssignment> moves)
    {
        foreach (var m in moves)
        {
            _registry.AssignRange(m.NodeId, m.To);
            _registry.MarkServing(m.NodeId);
        }
    }

    [Fact]
    public void NodeDiesMidJob_RecoveredByReplicaMove_NewRouteKeepsTheSurvivor()
    {
        Join(A, 6);
        Join(B, 6);
        Assert.Equal(new LayerRange(0, 6), _registry.Get(A)!.Range);
        Assert.Equal(new LayerRange(6, 12), _registry.Get(B)!.Range);
        Assert.True(_registry.ServingCoverage(Layers).IsCovered);

        Assert.Equal(AdmissionOutcome.Started, _admission.Submit("job1").Outcome);
        var route = _router.Route(Layers, RouteCandidate.FromAll(_registry.Snapshot())).Route!;
        Assert.Equal($"{A}[0:6) → {B}[6:12)", route.ToString());
        foreach (var hop in route.Hops) _registry.AdjustInFlight(hop.NodeId, +1);

        // A spare joins after the job started: it replicates the weakest half (a tie here, so the lower one).
        Join(C, 6);
        Assert.Equal(new LayerRange(0, 6), _registry.Get(C)!.Range);

        // b is SIGKILLed: silent from now on.
        var changes = Pass(3_000, B);
        var death = Assert.Single(changes, c => c.BecameDead);
        Assert.Equal(B, death.After.Id);

        var coverage = _registry.ServingCoverage(Layers);
        Assert.Equal([new LayerRange(6, 12)], coverage.Uncovered);
        Assert.Empty(_admission.UpdateCoverage(coverage.Uncovered));

        // A new job now waits for coverage.
        Assert.Equal(AdmissionOutcome.Queued, _admission.Submit("job2").Outcome);

        var moves = _placement.Recover(_registry.PlacementView());
        // a and c are equally placed, but a carries job1: the idle replica moves.
        var move = Assert.Single(moves);
        Assert.Equal((C, new LayerRange(6, 12)), (move.NodeId, move.To));
        Apply(moves);
        coverage = _registry.ServingCoverage(Layers);
        Assert.True(coverage.IsCovered);
        Assert.Equal("job2", Assert.Single(_admission.UpdateCoverage(coverage.Uncovered)).JobId);

        // The job's recovery routes afresh: the dead node is not routable, the surviving first stage is kept.
        Assert.Equal($"{A}[0:6) → {C}[6:12)", _router.Route(Layers, RouteCandidate.FromAll(_registry.Snapshot())).Route!.ToString());
    }

    [Fact]
    public void SwarmCannotCover_JobTimesOutNamingLayers_ThenServesAfterJoin()
    {
        Join(A, 4);
        var coverage = _registry.ServingCoverage(Layers);
        Assert.Equal("layers 4-11 are not served by any node", coverage.DescribeUncovered());
        _admission.UpdateCoverage(coverage.Uncovered);
        Assert.False(_router.Route(Layers, RouteCandidate.FromAll(_registry.Snapshot())).Success);

        Assert.Equal(AdmissionOutcome.Queued, _admission.Submit("j").Outcome);
        Pass(5_000);
        var timedOut = Assert.Single(_admission.Tick());
        Assert.Contains("layers 4-11", timedOut.Error);

        Join(B, 8);
        Assert.Equal(new LayerRange(4, 12), _registry.Get(B)!.Range);
        coverage = _registry.ServingCoverage(Layers);
        Assert.True(coverage.IsCovered);
        _admission.UpdateCoverage(coverage.Uncovered);
        Assert.Equal(AdmissionOutcome.Started, _admission.Submit("j2").Outcome);
        Assert.Equal($"{A}[0:4) → {B}[4:12)", _router.Route(Layers, RouteCandidate.FromAll(_registry.Snapshot())).Route!.ToString());
    }

    [Fact]
    public void DrainingNode_IsReCoveredBeforeItLeaves_AndGetsNoNewJobs()
    {
        Join(A, 12);
        Join(B, 6);
        Join(C, 6);
        _registry.BeginDrain(A);
        Assert.DoesNotContain(RouteCandidate.FromAll(_registry.Snapshot()), c => c.NodeId == A);
        var view = _registry.PlacementView();
        Assert.DoesNotContain(view, n => n.Id == A);
        Assert.True(CoverageReport.Of(Layers, view).IsCovered, "b and c should already cover the halves a replicated");
        Assert.Empty(_placement.Recover(view));
    }
}
