using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Swarm.Coordinator.Service;
using Swarm.Protocol;
using Swarm.Tests.Model;
using Swarm.Transport;
using Xunit;

namespace Swarm.Tests.Coordinator;

/// <summary>
/// The coordinator's own check of <see cref="Hello.ProtocolVersion"/>, behind the transport's connect-time check:
/// a node that announces another version is refused with <see cref="ErrorCode.VersionMismatch"/> and a reason naming both versions.
/// Serial (the "processes" collection): a running coordinator feeds the process-wide meters other tests count.
/// </summary>
[Collection("processes")]
public sealed class HelloVersionTests
{
    private static string Checkpoint => Path.Combine(Fixture.Root, Fixture.Tiny, "checkpoint");

    [Fact]
    public async Task Hello_AnnouncingVersion1_RefusedWithVersionMismatch()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await using var swarm = new SwarmCoordinator(new CoordinatorOptions { Model = Checkpoint, Listen = "127.0.0.1:0" }, NullLogger<SwarmCoordinator>.Instance);
        await swarm.StartAsync(cts.Token);
        await using var transport = LiteNetTransport.Start(new TransportOptions { BindAddress = IPAddress.Loopback, Port = 0 });
        var peer = await transport.ConnectAsync(swarm.ControlEndPoint!, cts.Token);

        var hello = new Hello
        {
            NodeName = "old", ProtocolVersion = 1, MemoryBudgetBytes = 1L << 30, LayerTokensPerSecond = 1000,
            DataEndpoint = transport.LocalEndPoint.ToString(), ModelId = swarm.ModelId,
        };
        var reply = await peer.RequestAsync(Envelope.Create(hello), TimeSpan.FromSeconds(10), cts.Token);

        var refused = Assert.IsType<Refused>(reply.Body);
        Assert.Equal(ErrorCode.VersionMismatch, refused.Code);
        Assert.Equal($"protocol version 1 is not supported (this coordinator speaks {ProtocolInfo.Version})", refused.Reason);
        Assert.Empty(swarm.Registry.Snapshot());
    }
}
