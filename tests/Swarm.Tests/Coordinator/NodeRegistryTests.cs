using Swarm.Coordinator.Membership;
using Swarm.Protocol;
using Xunit;

namespace Swarm.Tests.Coordinator;

public class NodeRegistryTests
{
    // Node ids, numbered in the alphabetical order of their names (placement and routing break ties by id).
    private const int A = 1, Nobody = 2;

    private static NodeInfo Info(int id, LayerRange? pinned = null) => new()
    {
        Id = id, Name = $"node-{id}", Endpoint = "127.0.0.1:1", MemoryBudgetBytes = 1 << 30, LayerThroughput = 100, PinnedRange = pinned,
    };

    private static (NodeRegistry Registry, ManualTimeProvider Clock) Make(FailureDetectorOptions? options = null)
    {
        var clock = new ManualTimeProvider();
        return (new NodeRegistry(options ?? new FailureDetectorOptions(), clock), clock);
    }

    /// <summary>Drives heartbeats every 500 ms and evaluations every 250 ms until <paramref name="untilMs"/>.</summary>
    private static List<(double AtMs, NodeTransition T)> Run(NodeRegistry reg, ManualTimeProvider clock, double untilMs,
        Func<double, bool> beats, int id = A)
    {
        var log = new List<(double, NodeTransition)>();
        for (double t = 250; t <= untilMs; t += 250)
        {
            clock.AdvanceMs(250);
            if (t % 500 == 0 && beats(t) && reg.Heartbeat(id).Transition is NodeTransition h) log.Add((t, h));
            foreach (var tr in reg.Evaluate()) log.Add((t, tr));
        }
        return log;
    }

    [Fact]
    public void Heartbeat_OfAnAliveNode_UpdatesItsLivenessWithoutSwappingTheSnapshot()
    {
        var (reg, clock) = Make();
        reg.Register(Info(A));
        var before = reg.Get(A)!;
        clock.AdvanceMs(400);
        var result = reg.Heartbeat(A, rttMs: 8);
        Assert.Equal(HeartbeatOutcome.Accepted, result.Outcome);
        Assert.Null(result.Transition);
        var after = reg.Get(A)!;
        Assert.Same(before, after); // no copy of the table for a heartbeat that changes nothing but liveness
        Assert.Equal(clock.GetUtcNow(), after.LastHeartbeat);
        Assert.Equal(8, after.RttMs);
        reg.Heartbeat(A, rttMs: 16);
        Assert.Equal(8 + new FailureDetectorOptions().RttSmoothing * 8, reg.Get(A)!.RttMs!.Value, 9);
    }

    [Fact]
    public void Heartbeat_OfASuspectNode_SwapsInAnAliveSnapshot_AndAFreshIncarnationStartsWithFreshLiveness()
    {
        var (reg, clock) = Make();
        reg.Register(Info(A));
        reg.Heartbeat(A, rttMs: 5);
        clock.AdvanceMs(1500);
        Assert.Contains(reg.Evaluate(), t => t.After.Health == NodeHealth.Suspect);
        var transition = reg.Heartbeat(A).Transition;
        Assert.NotNull(transition);
        Assert.Equal(NodeHealth.Alive, transition!.After.Health);
        Assert.Equal(NodeHealth.Alive, reg.Get(A)!.Health);
        clock.AdvanceMs(5000);
        Assert.Contains(reg.Evaluate(), t => t.BecameDead);
        var fresh = reg.Register(Info(A));
        Assert.Null(fresh.RttMs);
        Assert.Equal(clock.GetUtcNow(), fresh.LastHeartbeat);
    }

    [Fact]
    public void Register_NewNode_IsJoiningThenLoadingThenServing()
    {
        var (reg, _) = Make();
        Assert.Equal(NodeStatus.Joining, reg.Register(Info(A)).State);
        Assert.Equal(NodeStatus.Loading, reg.AssignRange(A, new LayerRange(0, 4))!.State);
        var serving = reg.MarkServing(A)!;
        Assert.Equal(NodeStatus.Serving, serving.State);
        Assert.True(serving.IsRoutable);
        Assert.Equal(new LayerRange(0, 4), serving.Range);
    }

    [Fact]
    public void Register_WithHeldRange_ServesImmediately()
    {
        var (reg, _) = Make();
        var n = reg.Register(Info(A), new LayerRange(2, 6));
        Assert.Equal(NodeStatus.Serving, n.State);
        Assert.Equal(new LayerRange(2, 6), n.Range);
    }

    [Fact]
    public void Evaluate_RegularHeartbeats_StaysAlive()
    {
        var (reg, clock) = Make();
        reg.Register(Info(A));
        var log = Run(reg, clock, 10_000, _ => true);
        Assert.Empty(log);
        Assert.Equal(NodeHealth.Alive, reg.Get(A)!.Health);
    }

    [Fact]
    public void Evaluate_OneLostBeat_DoesNotEvenSuspect()
    {
        var (reg, clock) = Make();
        reg.Register(Info(A));
        var log = Run(reg, clock, 5_000, t => t != 2_000);
        Assert.Empty(log);
    }

    [Fact]
    public void Evaluate_OneVeryLateBeat_SuspectButNeverDead()
    {
        var (reg, clock) = Make();
        reg.Register(Info(A));
        // Beats stop after 1 s and resume at 3 s: a 2 s gap, late by 1.5 s but under the 2.5 s dead timeout.
        var log = Run(reg, clock, 6_000, t => t <= 1_000 || t >= 3_000);
        Assert.Contains(log, e => e.T.After.Health == NodeHealth.Suspect);
        Assert.DoesNotContain(log, e => e.T.After.Health == NodeHealth.Dead);
        Assert.Equal(NodeHealth.Alive, reg.Get(A)!.Health);
        // Suspicion is lifted by the next beat.
        Assert.Contains(log, e => e.T.Before.Health == NodeHealth.Suspect && e.T.After.Health == NodeHealth.Alive);
    }

    [Fact]
    public void Evaluate_CrashedNode_ConfirmedDeadWithinThreeSeconds()
    {
        var (reg, clock) = Make();
        reg.Register(Info(A));
        reg.AssignRange(A, new LayerRange(0, 2));
        reg.MarkServing(A);
        const double crashAt = 1_000;
        var log = Run(reg, clock, 10_000, t => t <= crashAt);
        var dead = Assert.Single(log, e => e.T.BecameDead);
        Assert.InRange(dead.AtMs - crashAt, 0, 3_000);
        Assert.Equal(NodeStatus.Dead, reg.Get(A)!.State);
        Assert.False(reg.Get(A)!.IsRoutable);
        // Suspect came first.
        Assert.True(log.IndexOf(log.First(e => e.T.After.Health == NodeHealth.Suspect)) < log.IndexOf(dead));
    }

    [Fact]
    public void ReportFailure_MakesSuspectAtOnce_AndAcceleratesDeath()
    {
        var (reg, clock) = Make();
        reg.Register(Info(A));
        clock.AdvanceMs(100);
        var t = reg.ReportFailure(A);
        Assert.NotNull(t);
        Assert.Equal(NodeHealth.Suspect, t!.After.Health);
        // Silent since the failure: dead after 1 s of silence instead of 2.5 s.
        clock.AdvanceMs(900);
        var changes = reg.Evaluate();
        Assert.True(Assert.Single(changes).BecameDead);
    }

    [Fact]
    public void ReportFailure_WhileHeartbeating_DeadOnlyAfterThreeFailures()
    {
        var (reg, clock) = Make();
        reg.Register(Info(A));
        for (int i = 1; i <= 2; i++)
        {
            clock.AdvanceMs(100);
            reg.ReportFailure(A);
            clock.AdvanceMs(400);
            reg.Heartbeat(A);
            Assert.DoesNotContain(reg.Evaluate(), x => x.BecameDead);
            Assert.Equal(NodeHealth.Suspect, reg.Get(A)!.Health);
        }
        clock.AdvanceMs(100);
        Assert.True(reg.ReportFailure(A)!.BecameDead);
    }

    [Fact]
    public void ReportSuccess_ClearsFailures()
    {
        var (reg, clock) = Make();
        reg.Register(Info(A));
        clock.AdvanceMs(100);
        reg.ReportFailure(A);
        Assert.Equal(NodeHealth.Suspect, reg.Get(A)!.Health);
        Assert.Equal(NodeHealth.Alive, reg.ReportSuccess(A)!.Health);
        Assert.Empty(reg.Get(A)!.RecentFailures);
    }

    [Fact]
    public void Failures_OutsideWindow_AreForgotten()
    {
        var (reg, clock) = Make();
        reg.Register(Info(A));
        clock.AdvanceMs(100);
        reg.ReportFailure(A);
        for (int i = 0; i < 25; i++) { clock.AdvanceMs(500); reg.Heartbeat(A); reg.Evaluate(); }
        Assert.Equal(NodeHealth.Alive, reg.Get(A)!.Health);
        Assert.Empty(reg.Get(A)!.RecentFailures);
    }

    [Fact]
    public void Heartbeat_FromDeadOrUnknown_MustRegister_AndRegisterStartsFresh()
    {
        var (reg, clock) = Make();
        Assert.Equal(HeartbeatOutcome.MustRegister, reg.Heartbeat(Nobody).Outcome);
        reg.Register(Info(A), new LayerRange(0, 2));
        clock.AdvanceMs(3_000);
        Assert.True(Assert.Single(reg.Evaluate()).BecameDead);
        Assert.Equal(HeartbeatOutcome.MustRegister, reg.Heartbeat(A).Outcome);
        var again = reg.Register(Info(A));
        Assert.Equal(NodeStatus.Joining, again.State);
        Assert.Null(again.Range);
        Assert.Equal(HeartbeatOutcome.Accepted, reg.Heartbeat(A).Outcome);
    }

    [Fact]
    public void Heartbeat_SmoothsRtt()
    {
        var (reg, _) = Make();
        reg.Register(Info(A));
        reg.Heartbeat(A, 10);
        reg.Heartbeat(A, 20);
        Assert.Equal(12.5, reg.Get(A)!.RttMs!.Value, 6);
    }

    [Fact]
    public void Drain_And_Leave_StopCountingForPlacement()
    {
        var (reg, _) = Make();
        reg.Register(Info(A), new LayerRange(0, 2));
        Assert.True(reg.Get(A)!.CountsForPlacement);
        var draining = reg.BeginDrain(A)!;
        Assert.Equal(NodeStatus.Draining, draining.State);
        Assert.False(draining.CountsForPlacement);
        Assert.False(draining.IsRoutable);
        Assert.Null(draining.ToPlacementNode().Range);
        Assert.Equal(NodeStatus.Left, reg.MarkLeft(A)!.State);
        Assert.Equal(HeartbeatOutcome.MustRegister, reg.Heartbeat(A).Outcome);
        Assert.True(reg.Remove(A));
        Assert.Empty(reg.Snapshot());
    }

    [Fact]
    public void AdjustInFlight_NeverNegative()
    {
        var (reg, _) = Make();
        reg.Register(Info(A));
        reg.AdjustInFlight(A, 2);
        Assert.Equal(2, reg.Get(A)!.InFlight);
        Assert.Equal(0, reg.AdjustInFlight(A, -5)!.InFlight);
    }

    [Fact]
    public void Options_Validate_ReportsAllErrorsAtOnce()
    {
        var o = new FailureDetectorOptions
        {
            HeartbeatInterval = TimeSpan.FromSeconds(2), SuspectAfter = TimeSpan.FromSeconds(1),
            DeadAfter = TimeSpan.FromMilliseconds(500), FailuresToDead = 0, RttSmoothing = 0,
        };
        var errors = o.Validate();
        Assert.Equal(5, errors.Count);
        Assert.Throws<ArgumentException>(() => new NodeRegistry(o, new ManualTimeProvider()));
        Assert.Empty(new FailureDetectorOptions().Validate());
    }

    [Fact]
    public void CustomTimings_AreHonoured()
    {
        var o = new FailureDetectorOptions
        {
            HeartbeatInterval = TimeSpan.FromSeconds(1), SuspectAfter = TimeSpan.FromSeconds(3),
            DeadAfter = TimeSpan.FromSeconds(10), DeadAfterWhenFailing = TimeSpan.FromSeconds(2),
        };
        var (reg, clock) = Make(o);
        reg.Register(Info(A));
        clock.AdvanceMs(9_000);
        Assert.Equal(NodeHealth.Suspect, Assert.Single(reg.Evaluate()).After.Health);
        clock.AdvanceMs(1_000);
        Assert.True(Assert.Single(reg.Evaluate()).BecameDead);
    }
}
