using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Swarm.Node;
using Swarm.Protocol;
using Swarm.Transport;
using Xunit;

namespace Swarm.Tests.Node;

/// <summary>The node's coordinator link against a fake coordinator over the real transport, and what a node announces about its devices.</summary>
public class CoordinatorLinkTests
{
    private sealed class FixedStage(LayerRange? range) : IStageView
    {
        public LayerRange? Range => range;
        public StageHostStats? Stats => null;
    }

    internal static NodeProfile Profile(NodeOptions options) =>
        NodeProfile.From(options, new IPEndPoint(IPAddress.Loopback, 7000), new Swarm.Model.ModelConfig { NumLayers = 6, HiddenSize = 64, NumHeads = 4, IntermediateSize = 256, VocabSize = 512 }, 1234);

    [Theory]
    [InlineData(1, null, "cpu")]
    [InlineData(2, null, "cpu,cpu")]
    [InlineData(4, "cpu", "cpu,cpu,cpu,cpu")]
    [InlineData(2, "cuda:0,cuda:1", "cuda:0,cuda:1")]
    [InlineData(2, "CUDA", "cuda:0,cuda:0")]
    [InlineData(1, "cuda:1", "cuda:1")]
    public void DeviceList_OneDevicePerShard(int tp, string? devices, string expected) =>
        Assert.Equal(expected, new NodeOptions { Tp = tp, Devices = devices }.DeviceList);

    [Fact]
    public async Task Register_HelloCarriesTheDevicesOfEveryShard_AndTheNodeTakesItsId()
    {
        await using var coordinator = FakeCoordinator.Start(firstNodeId: 7);
        await using var transport = LiteNetTransport.Start(new TransportOptions { BindAddress = IPAddress.Loopback });
        var status = new NodeStatus();
        var options = new NodeOptions { Tp = 2, Devices = "cpu,cpu", Name = "n1", Memory = "2GB", Threads = 3, Layers = "0:3" };
        var link = new CoordinatorLink(transport, coordinator.EndPoint, Profile(options), new FixedStage(new LayerRange(0, 3)), status, NullLogger.Instance);

        await link.RegisterAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(20));

        var hello = await coordinator.NextAsync<Hello>();
        Assert.Equal("cpu,cpu", hello.Device);
        Assert.Equal("n1", hello.NodeName);
        Assert.Equal(2L << 30, hello.MemoryBudgetBytes);
        Assert.Equal(3, hello.Threads);
        Assert.Equal(new LayerRange(0, 3), hello.PinnedRange);
        Assert.Equal(new LayerRange(0, 3), hello.HeldRange);
        Assert.Equal("gpt_neox:6x64x512", hello.ModelId);
        Assert.Equal(7, status.NodeId);
        Assert.True(link.IsConnected);
        Assert.Equal(TimeSpan.FromMilliseconds(100), link.HeartbeatInterval);
    }

    [Fact]
    public async Task CoordinatorRestarts_LinkRegistersAgain_AnnouncingTheRangeItHolds()
    {
        // The coordinator comes back on its port: a port outside the ephemeral range, which no port-0 bind of a test
        // running in parallel can take while the first coordinator is gone.
        using var reserved = Swarm.Tests.Integration.ReservedPort.Take();
        int port = reserved.Port;
        var first = FakeCoordinator.Start(port, firstNodeId: 1);
        await using var transport = LiteNetTransport.Start(new TransportOptions { BindAddress = IPAddress.Loopback });
        var status = new NodeStatus();
        var link = new CoordinatorLink(transport, first.EndPoint, Profile(new NodeOptions()), new FixedStage(new LayerRange(2, 4)), status, NullLogger.Instance);
        transport.PeerDisconnected += link.OnPeerDisconnected;
        await link.RegisterAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(1, status.NodeId);

        await first.DisposeAsync();                          // the coordinator goes away …
        await using var second = FakeCoordinator.Start(port, firstNodeId: 40); // … and comes back on the same port

        var hello = await second.NextAsync<Hello>(TimeSpan.FromSeconds(30));
        Assert.Equal(new LayerRange(2, 4), hello.HeldRange); // the range this node still holds
        Assert.Null(hello.PinnedRange);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (status.NodeId != 40 && DateTime.UtcNow < deadline) await Task.Delay(20);
        Assert.Equal(40, status.NodeId);
        link.Stop();
    }

    [Fact]
    public async Task Heartbeats_ReportStateInFlightStepsAndTheHeldRange()
    {
        await using var coordinator = FakeCoordinator.Start();
        await using var transport = LiteNetTransport.Start(new TransportOptions { BindAddress = IPAddress.Loopback });
        var status = new NodeStatus { State = NodeReadiness.Ready };
        status.StepAccepted();
        var link = new CoordinatorLink(transport, coordinator.EndPoint, Profile(new NodeOptions()), new FixedStage(new LayerRange(0, 6)), status, NullLogger.Instance);
        await link.RegisterAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(20));
        using var stop = new CancellationTokenSource();
        var beats = link.RunHeartbeatsAsync(stop.Token);

        var heartbeat = await coordinator.NextAsync<Heartbeat>();
        Assert.Equal(NodeReadiness.Ready, heartbeat.State);
        Assert.Equal(1, heartbeat.InFlightSteps);
        Assert.Equal(new LayerRange(0, 6), heartbeat.Range);

        link.Leave("test over", TimeSpan.FromSeconds(3));
        var leave = await coordinator.NextAsync<Leave>();
        Assert.Equal(3000, leave.GraceMs);
        stop.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => beats);
    }
}
