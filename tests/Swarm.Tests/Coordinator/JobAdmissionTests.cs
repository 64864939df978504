using Swarm.Coordinator.Jobs;
using Swarm.Protocol;
using Xunit;

namespace Swarm.Tests.Coordinator;

public class JobAdmissionTests
{
    private static (JobAdmissionController Gate, ManualTimeProvider Clock) Make(int concurrent = 2, int queue = 3, double timeoutSec = 10)
    {
        var clock = new ManualTimeProvider();
        var o = new JobAdmissionOptions { MaxConcurrentJobs = concurrent, MaxQueueLength = queue, QueueTimeout = TimeSpan.FromSeconds(timeoutSec) };
        return (new JobAdmissionController(o, clock), clock);
    }

    [Fact]
    public void Submit_UnderLimit_StartsAtOnce_ThenQueues_ThenRejects()
    {
        var (gate, _) = Make();
        Assert.Equal(AdmissionOutcome.Started, gate.Submit("j1").Outcome);
        Assert.Equal(AdmissionOutcome.Started, gate.Submit("j2").Outcome);
        Assert.Equal(AdmissionOutcome.Queued, gate.Submit("j3").Outcome);
        Assert.Equal(AdmissionOutcome.Queued, gate.Submit("j4").Outcome);
        Assert.Equal(AdmissionOutcome.Queued, gate.Submit("j5").Outcome);
        var rejected = gate.Submit("j6");
        Assert.Equal(AdmissionOutcome.RejectedQueueFull, rejected.Outcome);
        Assert.Equal(429, rejected.SuggestedHttpStatus);
        Assert.Contains("2 jobs running and 3 queued", rejected.Error);
        Assert.Equal((2, 3), (gate.Running, gate.Queued));
        Assert.Throws<ArgumentException>(() => gate.Submit("j1"));
    }

    [Fact]
    public void Complete_StartsNextInFifoOrder()
    {
        var (gate, _) = Make();
        foreach (var j in new[] { "j1", "j2", "j3", "j4" }) gate.Submit(j);
        var started = Assert.Single(gate.Complete("j1"));
        Assert.Equal(("j3", AdmissionOutcome.Started), (started.JobId, started.Outcome));
        Assert.Equal("j4", Assert.Single(gate.Complete("j2")).JobId);
        Assert.Empty(gate.Complete("j2"));
        Assert.Equal((2, 0), (gate.Running, gate.Queued));
    }

    [Fact]
    public void Cancel_QueuedJob_IsDropped_RunningJobFreesSlot()
    {
        var (gate, _) = Make();
        foreach (var j in new[] { "j1", "j2", "j3", "j4" }) gate.Submit(j);
        Assert.Empty(gate.Cancel("j3"));
        Assert.Equal(1, gate.Queued);
        Assert.Equal("j4", Assert.Single(gate.Cancel("j1")).JobId);
        Assert.Empty(gate.Cancel("nope"));
    }

    [Fact]
    public void Uncovered_JobsWait_ThenStartWhenCovered()
    {
        var (gate, clock) = Make();
        gate.UpdateCoverage([new LayerRange(4, 6)]);
        Assert.Equal(AdmissionOutcome.Queued, gate.Submit("j1").Outcome);
        Assert.Equal(AdmissionOutcome.Queued, gate.Submit("j2").Outcome);
        Assert.Equal(AdmissionOutcome.Queued, gate.Submit("j3").Outcome);
        clock.AdvanceMs(5_000);
        Assert.Empty(gate.Tick());
        var started = gate.UpdateCoverage([]);
        Assert.Equal(["j1", "j2"], started.Select(e => e.JobId));
        Assert.Equal(1, gate.Queued);
    }

    [Fact]
    public void Uncovered_TimeOut_FailsNamingTheLayers()
    {
        var (gate, clock) = Make(timeoutSec: 30);
        gate.UpdateCoverage([new LayerRange(4, 6), new LayerRange(9, 10)]);
        gate.Submit("j1");
        clock.AdvanceMs(10_000);
        gate.Submit("j2");
        Assert.Equal(clock.GetUtcNow() + TimeSpan.FromSeconds(20), gate.NextDeadline);
        clock.AdvanceMs(19_999);
        Assert.Empty(gate.Tick());
        clock.AdvanceMs(1);
        var e = Assert.Single(gate.Tick());
        Assert.Equal(("j1", AdmissionOutcome.TimedOut, 503), (e.JobId, e.Outcome, e.SuggestedHttpStatus));
        Assert.Equal("no route: layers 4-5, layer 9 are not served by any node (waited 30 s)", e.Error);
        Assert.Equal([new LayerRange(4, 6), new LayerRange(9, 10)], e.Uncovered);
        clock.AdvanceMs(10_000);
        Assert.Equal("j2", Assert.Single(gate.Tick()).JobId);
        Assert.Null(gate.NextDeadline);
        Assert.Equal(0, gate.Queued);
    }

    [Fact]
    public void Busy_TimeOut_SaysSlotsNotLayers()
    {
        var (gate, clock) = Make(concurrent: 1);
        gate.Submit("j1");
        gate.Submit("j2");
        clock.AdvanceMs(10_000);
        var e = Assert.Single(gate.Tick());
        Assert.Equal("j2", e.JobId);
        Assert.Contains("job slots", e.Error);
        Assert.Empty(e.Uncovered);
        // The timed-out job is gone: completing the runner starts nobody.
        Assert.Empty(gate.Complete("j1"));
    }

    [Fact]
    public void ZeroQueue_Uncovered_RejectsNamingLayers()
    {
        var (gate, _) = Make(queue: 0);
        gate.UpdateCoverage([new LayerRange(0, 1)]);
        var e = gate.Submit("j1");
        Assert.Equal(AdmissionOutcome.RejectedQueueFull, e.Outcome);
        Assert.Contains("layer 0", e.Error);
    }

    [Fact]
    public void Options_Validate_ReportsAllErrorsAtOnce()
    {
        var o = new JobAdmissionOptions { MaxConcurrentJobs = 0, MaxQueueLength = -1, QueueTimeout = TimeSpan.FromSeconds(-1) };
        Assert.Equal(3, o.Validate().Count);
        Assert.Throws<ArgumentException>(() => new JobAdmissionController(o, new ManualTimeProvider()));
    }
}
