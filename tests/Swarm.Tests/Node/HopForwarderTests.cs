using System.Diagnostics;
using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Swarm.Node;
using Swarm.Protocol;
using Swarm.Transport;
using Xunit;

namespace Swarm.Tests.Node;

/// <summary>
/// The hop forwarder over the real transport: what the compute thread finished goes to the next hop (converted to
/// the wire dtype here) or to the coordinator, and an unreachable next hop is reported to the coordinator.
/// </summary>
public sealed class HopForwarderTests : IAsyncLifetime
{
    private readonly FakeCoordinator _coordinator = FakeCoordinator.Start(firstNodeId: 3);
    private readonly LiteNetTransport _node = LiteNetTransport.Start(new TransportOptions { BindAddress = IPAddress.Loopback });
    private readonly LiteNetTransport _next = LiteNetTransport.Start(new TransportOptions { BindAddress = IPAddress.Loopback });
    private readonly BoundedHandoff<Outgoing> _outbox = new(4);
    private readonly NodeStatus _status = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly HopLinks _links = new();
    private CoordinatorLink? _link;

    private async Task<HopForwarder> StartAsync()
    {
        var link = new CoordinatorLink(_node, _coordinator.EndPoint, CoordinatorLinkTests.Profile(new NodeOptions()), new NoStage(), _status, NullLogger.Instance,
            links: _links);
        _link = link;
        await link.RegisterAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(20));
        var forwarder = new HopForwarder(_node, link, _status, _outbox, _links, simulateLatencyMs: 0, NullLogger.Instance, _stop.Token);
        forwarder.Start();
        return forwarder;
    }

    private sealed class NoStage : IStageView
    {
        public LayerRange? Range => null;
        public StageHostStats? Stats => null;
    }

    private ForwardRequest Request(string nextEndpoint) => new()
    {
        JobId = 11, SessionId = 22, Step = 4, Kind = StepKind.Decode, StartPosition = 9,
        Input = WireTensor.FromTokenIds([5]), WireDType = WireDType.F16,
        Route = [new Hop { NodeId = 3, Endpoint = "127.0.0.1:1", Layers = new(0, 2) }, new Hop { NodeId = 8, Endpoint = nextEndpoint, Layers = new(2, 4) }],
        Timings = [],
    };

    private void Hand(ForwardRequest request, StepOutput? output, StepException? error = null)
    {
        _status.StepAccepted();
        var arrival = new StepArrival(Envelope.Create(request), Stopwatch.GetTimestamp(), Stopwatch.GetTimestamp());
        Assert.True(_outbox.Write(new FinishedStep(new StepCompletion(request, arrival, output, error), arrival), CancellationToken.None));
    }

    [Fact]
    public async Task HiddenStates_GoToTheNextHop_ConvertedToTheWireDType()
    {
        await StartAsync();
        float[] values = [0.1f, -2.5f, 1e-6f, 70000f, 3.14159f, -0f, 65504f, 1f / 3];
        var hidden = new WireTensor { DType = WireDType.F32, Shape = [1, 2, 4], Data = values.SelectMany(BitConverter.GetBytes).ToArray() };
        Hand(Request(_next.LocalEndPoint.ToString()), new StepOutput(hidden, null, 2.5));

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var received = await _next.Inbound.ReadAsync(timeout.Token);
        var forward = Assert.IsType<ForwardRequest>(received.Envelope.Body);
        Assert.Equal(8, Assert.Single(forward.Route).NodeId);                  // the route moved on by one hop
        Assert.Equal(WireDType.F16, forward.Input.DType);
        Assert.Equal([1L, 2, 4], forward.Input.Shape);
        var halves = Enumerable.Range(0, values.Length).Select(i => BitConverter.ToHalf(forward.Input.Data.Span[(2 * i)..])).ToArray();
        Assert.Equal(values.Select(v => (Half)v), halves);
        var timing = Assert.Single(forward.Timings);
        Assert.Equal((3, 2.5), (timing.NodeId, timing.Milliseconds));         // this node's id from its Welcome
        await _status.WhenIdleAsync().WaitAsync(TimeSpan.FromSeconds(5));      // handed on: nothing in flight
        Assert.Equal(1, _status.TokensServed);
    }

    [Fact]
    public async Task TheLinkToTheNextHop_IsReportedInHeartbeats_WithItsMeasuredRoundTrip()
    {
        await StartAsync();
        var heartbeats = _link!.RunHeartbeatsAsync(_stop.Token);
        Assert.Null(_link.LastHeartbeat?.Links?.FirstOrDefault()); // nothing handed on yet: no link to report
        var hidden = new WireTensor { DType = WireDType.F32, Shape = [1, 1, 1], Data = new byte[4] };
        Hand(Request(_next.LocalEndPoint.ToString()), new StepOutput(hidden, null, 1.0));
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        await _next.Inbound.ReadAsync(timeout.Token);

        // The transport's pings measure the link's round trip (about once a second); then heartbeats carry it.
        LinkReport? reported = null;
        while (reported is null)
        {
            await Task.Delay(100, timeout.Token);
            reported = _link.LastHeartbeat?.Links?.SingleOrDefault();
        }
        Assert.Equal(8, reported.ToNodeId);                  // the next hop's node id, from the route
        Assert.Equal(HopPath.Direct, reported.Path);
        Assert.InRange(reported.RttMs, 0, 1000);            // loopback: measured (often below the transport's 1 ms resolution)
        Assert.Null(MessageValidator.Validate(new Heartbeat { Links = [reported] }));
        await _stop.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => heartbeats);
    }

    [Fact]
    public async Task NextHopUnreachable_IsReportedToTheCoordinator_NamingTheNextNode()
    {
        await StartAsync();
        var hidden = new WireTensor { DType = WireDType.F32, Shape = [1, 1, 1], Data = new byte[4] };
        Hand(Request("no-such-host:port"), new StepOutput(hidden, null, 1));
        var failed = await _coordinator.NextAsync<StepFailed>();
        Assert.Equal(ErrorCode.NextHopUnreachable, failed.Code);
        Assert.Equal(8, failed.NodeId);
        Assert.Equal((11L, 22L, 4), (failed.JobId, failed.SessionId, failed.Step));
    }

    [Fact]
    public async Task NextHopProvingAnotherKeyThanTheRoutes_GetsNothing_AndIsReportedUnreachable()
    {
        await StartAsync();
        using var expected = Swarm.Transport.Security.NodeIdentity.CreateEphemeral();
        var request = Request(_next.LocalEndPoint.ToString());
        request = request with { Route = [request.Route[0], request.Route[1] with { Key = expected.PublicKey.ToArray() }] };
        Hand(request, new StepOutput(new WireTensor { DType = WireDType.F32, Shape = [1, 1, 1], Data = new byte[4] }, null, 1));
        var failed = await _coordinator.NextAsync<StepFailed>(TimeSpan.FromSeconds(20));
        Assert.Equal(ErrorCode.NextHopUnreachable, failed.Code);
        Assert.Equal(8, failed.NodeId);
        Assert.Contains($"is not the pinned key {expected.Fingerprint}", failed.Message);
        Assert.False(_next.Inbound.TryRead(out _));
    }

    [Fact]
    public async Task NextHopThatRefusesUsAtFirst_GetsTheStepOnceItKnowsUs()
    {
        await StartAsync();
        bool vouched = false;
        await using var next = LiteNetTransport.Start(new TransportOptions
        {
            BindAddress = IPAddress.Loopback, AuthorizeInbound = _ => Volatile.Read(ref vouched) ? null : "not vouched for yet",
        });
        _ = Task.Delay(250).ContinueWith(_ => Volatile.Write(ref vouched, true), TaskScheduler.Default);
        var request = Request(next.LocalEndPoint.ToString());
        request = request with { Route = [request.Route[0], request.Route[1] with { Key = next.LocalKey.ToArray() }] };
        Hand(request, new StepOutput(new WireTensor { DType = WireDType.F32, Shape = [1, 1, 1], Data = new byte[4] }, null, 1));
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var received = await next.Inbound.ReadAsync(timeout.Token);
        Assert.IsType<ForwardRequest>(received.Envelope.Body);
        Assert.True(next.Counters.HandshakesFailed >= 1, "the first attempt was refused");
    }

    [Fact]
    public async Task TokensAndErrors_GoToTheCoordinator()
    {
        await StartAsync();
        var last = Request("unused") with { Route = [new Hop { NodeId = 3, Endpoint = "127.0.0.1:1", Layers = new(0, 4) }] };
        Hand(last, new StepOutput(null, 42, 1.5));
        var token = await _coordinator.NextAsync<TokenResult>();
        Assert.Equal((42, 4), (token.TokenId, token.Step));
        Assert.Equal(3, Assert.Single(token.Timings).NodeId);

        Hand(last with { Step = 5 }, null, new StepException(ErrorCode.BadRequest, "token ids must be in [0, 512)"));
        var failed = await _coordinator.NextAsync<StepFailed>();
        Assert.Equal((ErrorCode.BadRequest, 5, 3), (failed.Code, failed.Step, failed.NodeId));
        Assert.Contains("token ids must be in", failed.Message);
    }

    [Fact]
    public async Task Completion_EndsOnceTheOutboxIsCompletedAndDrained()
    {
        var forwarder = await StartAsync();
        var last = Request("unused") with { Route = [new Hop { NodeId = 3, Endpoint = "127.0.0.1:1", Layers = new(0, 4) }] };
        Hand(last, new StepOutput(null, 1, 1));
        _outbox.Complete();
        await forwarder.Completion.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(0, _status.InFlight);
        Assert.False(_outbox.Write(new CoordinatorNotice(new Ack()), CancellationToken.None));
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        _stop.Cancel();
        _outbox.Complete();
        await _next.DisposeAsync();
        await _node.DisposeAsync();
        await _coordinator.DisposeAsync();
        _stop.Dispose();
    }
}
