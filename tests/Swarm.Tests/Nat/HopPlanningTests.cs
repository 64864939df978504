using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Nat;
using Swarm.Protocol;
using Swarm.Tests.Coordinator;
using Swarm.Tests.Coordinator.Jobs;
using Swarm.Transport;
using Swarm.Transport.Nat;
using Xunit;

namespace Swarm.Tests.Nat;

/// <summary>
/// How the coordinator makes each hop of a route (<see cref="HopPathPlanner"/>) and which relay carries a hop whose
/// punching failed (<see cref="RelayChooser"/>, <see cref="HopRelays"/>): a volunteer relay node when one is eligible,
/// else the coordinator's own relay; never a dead, banned or failed one.
/// </summary>
public sealed class HopPlanningTests : IDisposable
{
    private readonly ManualTimeProvider _clock = new();
    private readonly NodeRegistry _registry;
    private readonly FakeStepChannel _channel;
    private readonly FakeVolunteers _volunteers = new();
    private readonly UdpRelay _own = new(IPAddress.Loopback, TimeSpan.FromSeconds(30));
    private readonly HopRelays _relays;
    private readonly HopPathPlanner _planner;

    public HopPlanningTests()
    {
        _registry = new NodeRegistry(new FailureDetectorOptions(), _clock);
        _channel = new FakeStepChannel(_clock);
        _relays = new HopRelays(_registry, _volunteers, _own, NullLogger.Instance);
        _planner = new HopPathPlanner(_registry, _channel, _relays, NullLogger.Instance);
    }

    public void Dispose()
    {
        _planner.Dispose();
        _relays.Dispose();
        _own.Dispose();
    }

    [Fact]
    public async Task Planner_DirectToReachable_PunchesNatUntilItFails_ThenRelaysThroughTheCoordinatorWithoutVolunteers()
    {
        _registry.Register(Info(1, reachable: true));
        _registry.Register(Info(2, reachable: false));
        _registry.Register(Info(3, reachable: true));
        Hop[] route = [Hop(1), Hop(2), Hop(3)];

        var first = await _planner.PlanAsync(route);
        Assert.Equal([HopPath.Direct, HopPath.Punched, HopPath.Direct], first.Select(h => h.Path));
        var punch = Assert.IsType<Introduce>(Assert.Single(_channel.Sent).Message);
        Assert.Equal((2, 1, "10.0.0.1:7000", HopPath.Punched), (_channel.Sent[0].NodeId, punch.PeerNodeId, punch.Target, punch.Path));

        _planner.ReportUnreachable(1, 2);
        var second = await _planner.PlanAsync(route);
        Assert.Equal(HopPath.Relayed, second[1].Path);
        Assert.True(EndPoints.TryParse(second[1].Via, out var via) && via!.Port > 0);
        var relayed = Assert.IsType<Introduce>(_channel.Sent[^1].Message);
        Assert.Equal((2, HopPath.Relayed), (_channel.Sent[^1].NodeId, relayed.Path));
        Assert.Equal(1, _own.Count);
        Assert.Equal(second[1].Via, (await _planner.PlanAsync(route))[1].Via); // the allocation is kept for the pair
        Assert.Contains(new PlannedLink(1, 2, HopPath.Relayed, second[1].Via, "coordinator"), _planner.Links);
        Assert.Empty(_volunteers.Requests);

        _planner.Forget(2);
        Assert.Equal(0, _own.Count);
    }

    [Fact]
    public async Task PunchFailed_WithAReachableVolunteer_RelaysThroughTheVolunteer_NotTheCoordinator()
    {
        _registry.Register(Info(1, reachable: false));
        _registry.Register(Info(2, reachable: false));
        _registry.Register(Info(3, reachable: true, relay: true));
        Hop[] route = [Hop(1), Hop(2)];
        await PunchThenFailAsync(route);

        var planned = await _planner.PlanAsync(route);

        Assert.Equal((HopPath.Relayed, "10.0.0.3:40001"), (planned[1].Path, planned[1].Via));
        var open = Assert.Single(_volunteers.Requests);
        Assert.Equal((3, RelayControlAction.Open, "10.0.0.1", "10.0.0.2"), (open.NodeId, open.Message.Action, open.Message.Upstream, open.Message.Downstream));
        var introduce = Assert.IsType<Introduce>(_channel.Sent[^1].Message);
        Assert.Equal((2, "10.0.0.3:40002", HopPath.Relayed), (_channel.Sent[^1].NodeId, introduce.Target, introduce.Path));
        Assert.Equal(0, _own.Count); // the coordinator relays nothing
        Assert.Contains(new PlannedLink(1, 2, HopPath.Relayed, "10.0.0.3:40001", "node-3"), _planner.Links);
    }

    [Fact]
    public void RelayChooser_PrefersRelaysOffTheRoute_ThenTheLowerRoundTrip_AndSkipsIneligibleOnes()
    {
        _registry.Register(Info(1, reachable: false));
        _registry.Register(Info(2, reachable: false));
        foreach (var (id, rtt) in new[] { (3, 50.0), (4, 5.0), (5, 1.0) })
        {
            _registry.Register(Info(id, reachable: true, relay: true));
            _registry.Heartbeat(id, rtt);
        }
        _registry.Register(Info(6, reachable: false, relay: true)); // behind NAT: cannot relay
        _registry.Register(Info(7, reachable: true));              // did not volunteer
        _registry.Register(Info(8, reachable: true, relay: true));
        _registry.Ban(8);
        _registry.Register(Info(9, reachable: true, relay: true));
        _registry.BeginDrain(9);                                   // leaving

        var ranked = RelayChooser.Rank(_registry.Snapshot(), 1, 2, route: [5, 1, 2], failed: []);
        Assert.Equal([4, 3, 5], ranked.Select(n => n.Id));          // 5 is a stage of the route: last
        Assert.Equal([3, 5], RelayChooser.Rank(_registry.Snapshot(), 1, 2, route: [5, 1, 2], failed: [4]).Select(n => n.Id));
    }

    [Fact]
    public async Task DeadOrBannedVolunteers_AreNeverAsked_TheCoordinatorRelaysInstead()
    {
        _registry.Register(Info(1, reachable: false));
        _registry.Register(Info(2, reachable: false));
        _registry.Register(Info(3, reachable: true, relay: true));
        _registry.Register(Info(4, reachable: true, relay: true));
        _registry.Ban(4);
        _clock.Advance(TimeSpan.FromSeconds(10)); // nobody sent a heartbeat: every node is declared dead …
        _registry.Evaluate();
        foreach (int id in new[] { 1, 2 }) _registry.Heartbeat(id); // … but the two ends are back
        Assert.Equal(NodeStatus.Dead, _registry.Get(3)!.State);
        Hop[] route = [Hop(1), Hop(2)];
        await PunchThenFailAsync(route);

        var planned = await _planner.PlanAsync(route);

        Assert.Equal(HopPath.Relayed, planned[1].Path);
        Assert.Empty(_volunteers.Requests);
        Assert.Equal(1, _own.Count);
        Assert.Contains(_planner.Links, l => l is { From: 1, To: 2, Relay: "coordinator" });
    }

    [Fact]
    public async Task AVolunteerThatFailsAHop_IsNotAskedForItAgain_AndALostVolunteerClosesItsHops()
    {
        _registry.Register(Info(1, reachable: false));
        _registry.Register(Info(2, reachable: false));
        _registry.Register(Info(3, reachable: true, relay: true));
        _registry.Register(Info(4, reachable: true, relay: true));
        _registry.Heartbeat(3, 1);
        _registry.Heartbeat(4, 20);
        Hop[] route = [Hop(1), Hop(2)];
        await PunchThenFailAsync(route);
        Assert.Equal("10.0.0.3:40001", (await _planner.PlanAsync(route))[1].Via);

        _planner.ReportUnreachable(1, 2); // the upstream could not get through node 3
        Assert.Contains(_volunteers.Sent, m => m is { NodeId: 3, Message.Action: RelayControlAction.Close });
        Assert.Equal("10.0.0.4:40003", (await _planner.PlanAsync(route))[1].Via);

        var lost = new ConcurrentQueue<(int, int)>();
        _planner.LinkLost += (from, to) => lost.Enqueue((from, to));
        _planner.Forget(4); // node 4 died: the hop it relayed is lost at once, and the next plan uses the coordinator
        Assert.Equal([(1, 2)], lost);
        var last = await _planner.PlanAsync(route);
        Assert.Equal(HopPath.Relayed, last[1].Path);
        Assert.Equal(1, _own.Count);
        Assert.Equal(2, _volunteers.Requests.Count);
    }

    [Fact]
    public async Task AVolunteerThatDoesNotAnswer_IsSkipped_ForTheNextOne()
    {
        _registry.Register(Info(1, reachable: false));
        _registry.Register(Info(2, reachable: false));
        _registry.Register(Info(3, reachable: true, relay: true));
        _registry.Register(Info(4, reachable: true, relay: true));
        _registry.Heartbeat(3, 1);
        _registry.Heartbeat(4, 20);
        _volunteers.Silent.Add(3);
        Hop[] route = [Hop(1), Hop(2)];
        await PunchThenFailAsync(route);

        Assert.Equal("10.0.0.4:40001", (await _planner.PlanAsync(route))[1].Via);
        Assert.Equal([3, 4], _volunteers.Requests.Select(r => r.NodeId));
    }

    private async Task PunchThenFailAsync(Hop[] route)
    {
        Assert.Equal(HopPath.Punched, (await _planner.PlanAsync(route))[1].Path);
        _planner.ReportUnreachable(1, 2);
    }

    private static Hop Hop(int id) => new() { NodeId = id, Endpoint = $"10.0.0.{id}:7000", Layers = new LayerRange(id - 1, id) };

    private static NodeInfo Info(int id, bool reachable, bool relay = false) => new()
    {
        Id = id, Name = $"node-{id}", Endpoint = $"10.0.0.{id}:7000", Reachable = reachable, OffersRelay = relay && reachable,
        MemoryBudgetBytes = 1 << 30, LayerThroughput = 100,
    };

    /// <summary>Volunteer relay nodes that open every hop on the next two ports (from 40001), except <see cref="Silent"/> ones, which never answer.</summary>
    private sealed class FakeVolunteers : IRelayControlChannel
    {
        private int _nextPort = 40001;

        public List<(int NodeId, RelayControl Message)> Requests { get; } = [];
        public List<(int NodeId, RelayControl Message)> Sent { get; } = [];
        public HashSet<int> Silent { get; } = [];

        public Task<IMessage> RequestAsync(int nodeId, RelayControl request, TimeSpan timeout, CancellationToken cancellationToken)
        {
            Requests.Add((nodeId, request));
            if (Silent.Contains(nodeId)) return Task.FromException<IMessage>(new TimeoutException($"node {nodeId} did not answer"));
            int up = _nextPort++, down = _nextPort++;
            return Task.FromResult<IMessage>(new RelayControl { Action = RelayControlAction.Opened, HopId = request.HopId, UpstreamPort = up, DownstreamPort = down });
        }

        public void Send(int nodeId, RelayControl message) => Sent.Add((nodeId, message));
    }
}
