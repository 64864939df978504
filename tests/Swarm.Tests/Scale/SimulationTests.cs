using System.Text.Json.Nodes;
using Swarm.Coordinator.Simulation;
using Xunit;

namespace Swarm.Tests.Scale;

/// <summary>
/// <c>swarm sim</c>: the event queue's order, the virtual clock, determinism per seed, and scenarios in which the
/// coordinator's real placement, failure detection, routing and admission keep a churning swarm serving.
/// </summary>
public sealed class SimulationTests
{
    [Fact]
    public void EventQueue_MixedTimes_DequeuesByTimeAndSameTimesInScheduleOrder()
    {
        var q = new EventQueue<string>();
        q.Schedule(TimeSpan.FromSeconds(2), "c");
        q.Schedule(TimeSpan.FromSeconds(1), "a");
        q.Schedule(TimeSpan.FromSeconds(2), "d");
        q.Schedule(TimeSpan.FromSeconds(1), "b");
        q.Schedule(TimeSpan.FromSeconds(0.5), "first");

        Assert.Equal(TimeSpan.FromSeconds(0.5), q.NextAt);
        var order = new List<(double, string)>();
        while (q.TryDequeue(out var at, out var item)) order.Add((at.TotalSeconds, item));

        Assert.Equal([(0.5, "first"), (1, "a"), (1, "b"), (2, "c"), (2, "d")], order);
        Assert.Equal(0, q.Count);
        Assert.Null(q.NextAt);
        Assert.Equal(5, q.Scheduled);
    }

    [Fact]
    public void EventQueue_ManySameTimeItems_StayFifo()
    {
        var q = new EventQueue<int>();
        for (int i = 0; i < 1000; i++) q.Schedule(TimeSpan.FromSeconds(i % 3), i);
        var seen = new List<int>();
        while (q.TryDequeue(out _, out int i)) seen.Add(i);
        int[] expected = [.. Enumerable.Range(0, 1000).OrderBy(i => i % 3).ThenBy(i => i)];
        Assert.Equal(expected, seen);
    }

    [Fact]
    public void VirtualClock_Advance_MovesNowAndTimestampButNeverBack()
    {
        var clock = new VirtualClock();
        var start = clock.GetUtcNow();
        clock.AdvanceTo(TimeSpan.FromSeconds(90));
        Assert.Equal(start + TimeSpan.FromSeconds(90), clock.GetUtcNow());
        Assert.Equal(TimeSpan.FromSeconds(90), clock.GetElapsedTime(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => clock.AdvanceTo(TimeSpan.FromSeconds(89)));
        Assert.Throws<NotSupportedException>(() => clock.CreateTimer(_ => { }, null, TimeSpan.Zero, TimeSpan.Zero));
    }

    private static SimulationOptions Small(int seed) => new() { Nodes = 30, Hours = 0.1, Seed = seed, MeanSessionHours = 0.5, JobsPerNodeHour = 60, NewTokens = 32 };

    [Fact]
    public void Run_SameSeedTwice_JsonIdenticalExceptWallSeconds()
    {
        var a = JsonNode.Parse(new SwarmSimulation(Small(7)).Run().ToJson())!.AsObject();
        var b = JsonNode.Parse(new SwarmSimulation(Small(7)).Run().ToJson())!.AsObject();
        Assert.True(a.Remove("wall_seconds"));
        Assert.True(b.Remove("wall_seconds"));

        Assert.Equal(a.ToJsonString(), b.ToJsonString());
        Assert.True((long)a["jobs_submitted"]! > 0);
        Assert.True((long)a["abrupt_departures"]! + (long)a["announced_departures"]! > 0);
    }

    [Fact]
    public void Run_OtherSeed_DifferentRun()
    {
        var a = JsonNode.Parse(new SwarmSimulation(Small(7)).Run().ToJson())!.AsObject();
        var b = JsonNode.Parse(new SwarmSimulation(Small(8)).Run().ToJson())!.AsObject();
        a.Remove("wall_seconds");
        b.Remove("wall_seconds");
        Assert.NotEqual(a.ToJsonString(), b.ToJsonString());
    }

    [Fact]
    public void Run_SmallSwarmHeavyChurn_LostLayersAreRecoveredAndJobsRepairTheirRoutes()
    {
        // 12 nodes, sessions of 15 minutes on average, all abrupt: layers are lost often. A pythia-12b layer takes
        // minutes to download on a home connection, so gaps happen; the controller must close every one of them.
        var r = new SwarmSimulation(new SimulationOptions { Nodes = 12, Hours = 0.5, Seed = 3, MeanSessionHours = 0.25, AbruptFraction = 1, JobsPerNodeHour = 120, NewTokens = 64 }).Run();

        Assert.True(r.AbruptDepartures >= 10, $"{r.AbruptDepartures} abrupt departures");
        Assert.True(r.PlacementMoves > 0, "the controller never moved a layer");
        Assert.True(r.RecoveriesPerJob > 0, "no job needed a route repair");
        Assert.True(r.JobsCompleted > 0);
        Assert.Contains(Enumerable.Range(1, r.Coverage.Count - 1), i => r.Coverage[i - 1].Uncovered > 0 && r.Coverage[i].Uncovered == 0); // a gap closed
        Assert.True(r.TimePerTokenP95Ms > r.TimePerTokenP50Ms);
    }

    [Fact]
    public void Run_1000NodesTenPercentChurnPerHour_EveryLayerStaysCoveredAndNoJobIsLost()
    {
        var r = new SwarmSimulation(new SimulationOptions { Nodes = 1000, Hours = 0.5, Seed = 11, MeanSessionHours = 10, JobsPerNodeHour = 4 }).Run();

        Assert.True(r.AbruptDepartures + r.AnnouncedDepartures >= 20, $"{r.AbruptDepartures + r.AnnouncedDepartures} departures");
        Assert.NotEmpty(r.Coverage);
        Assert.All(r.Coverage, s => Assert.Equal(0, s.Uncovered));
        Assert.True(r.JobsSubmitted > 1000);
        Assert.Equal(r.JobsSubmitted, r.JobsCompleted);
        Assert.Equal(0, r.JobsFailed + r.JobsRejected);
    }
}
