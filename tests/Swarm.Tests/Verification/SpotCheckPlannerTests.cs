using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Routing;
using Swarm.Coordinator.Verification;
using Swarm.Protocol;
using Xunit;

namespace Swarm.Tests.Verification;

/// <summary>Which sessions are spot-checked, which hop, and on which shadow — and how bans and reputation land in the registry.</summary>
public class SpotCheckPlannerTests
{
    private static NodeSnapshot Node(int id, int start, int end, int passed = 0, int failed = 0) => new()
    {
        Info = new NodeInfo { Id = id, Name = $"n{id}", Endpoint = $"127.0.0.1:{7000 + id}", MemoryBudgetBytes = 1 << 30, LayerThroughput = 100 },
        Phase = NodePhase.Serving, Range = new LayerRange(start, end), JoinedAt = DateTimeOffset.UnixEpoch, LastHeartbeat = DateTimeOffset.UnixEpoch,
        ChecksPassed = passed, ChecksFailed = failed,
    };

    private static Route Route(params (int Node, int Start, int End)[] hops) =>
        new([.. hops.Select(h => new RouteHop(h.Node, new LayerRange(h.Start, h.End)))], 1);

    [Fact]
    public void Choose_TwoNodesOnProbation_ChecksTheOneWithFewerPasses_OnAReplicaOutsideTheRoute()
    {
        var planner = new SpotCheckPlanner(new VerificationOptions { Rate = 0.3 }, new Random(1));
        NodeSnapshot[] nodes = [Node(1, 0, 2, passed: 10), Node(2, 2, 4, passed: 2), Node(3, 2, 4, passed: 40), Node(4, 0, 4, passed: 40)];
        for (int i = 0; i < 50; i++)
        {
            var choice = planner.Choose(Route((1, 0, 2), (2, 2, 4)), nodes);
            Assert.NotNull(choice); // probation rate min(1, 10 × 0.3) = 1: always drawn
            Assert.Equal(1, choice.Value.HopIndex);
            Assert.Contains(choice.Value.Shadow.Id, new[] { 3, 4 }); // both hold layers 2..4; never a node of the route
        }
    }

    [Fact]
    public void Choose_HopWithoutASecondReplica_IsSkipped_ForOneThatHasOne()
    {
        var planner = new SpotCheckPlanner(new VerificationOptions { Rate = 0.3 }, new Random(5));
        NodeSnapshot[] nodes = [Node(1, 0, 2), Node(2, 2, 4, passed: 5), Node(3, 2, 4, passed: 5)]; // node 1: the only replica of 0..2
        for (int i = 0; i < 20; i++)
            Assert.Equal(1, planner.Choose(Route((1, 0, 2), (2, 2, 4)), nodes)!.Value.HopIndex);
    }

    [Fact]
    public void Choose_TrustedNodes_AreCheckedAtTheBaseRate()
    {
        var planner = new SpotCheckPlanner(new VerificationOptions { Rate = 0.05 }, new Random(2));
        NodeSnapshot[] nodes = [Node(1, 0, 4, passed: 100), Node(2, 0, 4, passed: 100)];
        int drawn = Enumerable.Range(0, 4000).Count(_ => planner.Choose(Route((1, 0, 4)), nodes) is not null);
        Assert.InRange(drawn, 120, 280); // 200 expected
    }

    [Fact]
    public void Choose_AfterAFailedCheck_BackOnProbation_AndNeverWithoutAShadowOrAtRateZero()
    {
        var options = new VerificationOptions { Rate = 0.05 };
        var planner = new SpotCheckPlanner(options, new Random(3));
        Assert.Equal(options.ProbationRate, planner.RateOf(Node(1, 0, 4, passed: 40, failed: 1)));
        Assert.Equal(options.Rate, planner.RateOf(Node(1, 0, 4, passed: 64, failed: 1)));
        Assert.Null(planner.Choose(Route((1, 0, 4)), [Node(1, 0, 4), Node(2, 0, 2)])); // no other node holds 0..4
        Assert.Null(new SpotCheckPlanner(new VerificationOptions(), new Random(4)).Choose(Route((1, 0, 4)), [Node(1, 0, 4), Node(2, 0, 4)]));
    }

    [Fact]
    public void Choose_AlwaysOnProbation_ChecksEverySessionThroughANewcomer_ButTrustedNodesStillAtTheBaseRate()
    {
        var planner = new SpotCheckPlanner(new VerificationOptions { Rate = 0.01 }, new Random(6));
        NodeSnapshot[] newcomers = [Node(1, 0, 4, passed: 5), Node(2, 0, 4, passed: 5)];
        NodeSnapshot[] trusted = [Node(1, 0, 4, passed: 100), Node(2, 0, 4, passed: 100)];
        Assert.All(Enumerable.Range(0, 200), _ => Assert.NotNull(planner.Choose(Route((1, 0, 4)), newcomers, alwaysOnProbation: true)));
        Assert.InRange(Enumerable.Range(0, 1000).Count(_ => planner.Choose(Route((1, 0, 4)), newcomers) is not null), 50, 150); // probation rate 0.1
        Assert.InRange(Enumerable.Range(0, 1000).Count(_ => planner.Choose(Route((1, 0, 4)), trusted, alwaysOnProbation: true) is not null), 0, 30);
        Assert.True(planner.IsOnProbation(newcomers[0]));
        Assert.False(planner.IsOnProbation(trusted[0]));
    }

    [Fact]
    public void BanBoard_Ban_MarksTheNodeBanned_RefusesItsKeyUntilTheBanEnds_AndTellsListeners()
    {
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UnixEpoch);
        var registry = new NodeRegistry(new FailureDetectorOptions(), time);
        byte[] key = [.. Enumerable.Repeat((byte)7, 32)];
        registry.Register(new NodeInfo { Id = 5, Name = "liar", Endpoint = "127.0.0.1:1", MemoryBudgetBytes = 1 << 30, LayerThroughput = 1, Key = key }, new LayerRange(0, 4));
        registry.RecordCheck(5, passed: true);
        var bans = new BanBoard(registry, time, TimeSpan.FromMinutes(10));
        NodeBan? heard = null;
        bans.Banned += b => heard = b;
        time.Advance(TimeSpan.FromSeconds(3));
        Assert.True(bans.Ban(5, "lied"));
        Assert.False(bans.Ban(5, "again"));
        var node = registry.Get(5)!;
        Assert.Equal(NodeStatus.Banned, node.State);
        Assert.False(node.IsRoutable);
        Assert.Equal((1, DateTimeOffset.UnixEpoch), (node.ChecksPassed, heard!.Since));
        Assert.NotNull(bans.BannedUntil(node.Info.KeyFingerprint));
        time.Advance(TimeSpan.FromMinutes(10));
        Assert.Null(bans.BannedUntil(node.Info.KeyFingerprint));
    }
}
