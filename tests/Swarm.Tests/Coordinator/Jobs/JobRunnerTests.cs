using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Swarm.Coordinator.Jobs;
using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Routing;
using Swarm.Coordinator.Service;
using Swarm.Protocol;
using Swarm.Sampling;
using Xunit;
using static Swarm.Tests.Coordinator.Jobs.FakeStepChannel;

namespace Swarm.Tests.Coordinator.Jobs;

/// <summary>
/// The job pipeline (admission, routing, step loop, recovery, stop detection, history) through <see cref="JobRunner"/>
/// with the real registry and router, a <see cref="FakeStepChannel"/> for the nodes and a fake clock: no processes,
/// no sockets, no sleeps. Node ids are numeric, as the coordinator assigns them.
/// </summary>
public sealed class JobRunnerTests
{
    private const int Layers = 4;
    private static readonly int[] Prompt = [1, 2, 3];
    private static readonly TimeSpan StepTime = TimeSpan.FromMilliseconds(5);

    private readonly FakeTimeProvider _time = new();
    private readonly NodeRegistry _registry;
    private readonly FakeStepChannel _channel;

    public JobRunnerTests()
    {
        _registry = new NodeRegistry(new FailureDetectorOptions(), _time);
        _channel = new FakeStepChannel(_time);
    }

    private JobRunner Runner(JobRunnerOptions? options = null) =>
        new(options ?? new JobRunnerOptions { NumLayers = Layers, ContextLength = 64 }, _registry,
            new ShortestPathRouter(new RoutingOptions(), new PowerOfTwoChoicesPolicy(new Random(1))), _channel, null, _time, NullLogger.Instance);

    private void Serve(int id, int start, int end) => _registry.Register(new NodeInfo
    {
        Id = id, Name = $"node-{id}", Endpoint = $"127.0.0.1:{9000 + id}", MemoryBudgetBytes = 1L << 30, LayerThroughput = 1000,
    }, new LayerRange(start, end));

    private static JobSpec Spec(int maxNewTokens, IReadOnlyList<int>? stopTokenIds = null, IReadOnlyList<string>? stops = null) =>
        new(Prompt, new SamplingOptions { MaxNewTokens = maxNewTokens, Seed = 7, StopTokenIds = stopTokenIds ?? [] }, stops ?? []);

    /// <summary>A pipeline that takes <see cref="StepTime"/> per step and samples 100 + step.</summary>
    private IMessage Compute(ForwardRequest r)
    {
        _time.Advance(StepTime);
        return TokenFor(r, 100 + r.Step);
    }

    private void AssertNothingInFlight() => Assert.All(_registry.Snapshot(), n => Assert.Equal(0, n.InFlight));

    /// <summary>Moves the fake clock in small steps, letting the job's continuations run between them, until <paramref name="job"/> ends.</summary>
    private async Task AdvanceUntilDone(Task job, TimeSpan by)
    {
        for (int i = 0; i < 100_000 && !job.IsCompleted; i++)
        {
            _time.Advance(by);
            await Task.WhenAny(job, Task.Delay(1));
        }
        Assert.True(job.IsCompleted, "the job did not end while the clock advanced");
    }

    [Fact]
    public async Task RunAsync_HealthyRoute_PrefillsThenDecodesOneTokenPerStepOnOneSession()
    {
        Serve(1, 0, 2);
        Serve(2, 2, 4);
        using var runner = Runner();
        var streamed = new List<int>();

        var result = await runner.RunAsync(Spec(4), d => { streamed.AddRange(d.TokenIds); return ValueTask.CompletedTask; }, CancellationToken.None);

        Assert.Equal([100, 101, 102, 103], result.TokenIds);
        Assert.Equal(result.TokenIds, streamed);
        Assert.Equal(("length", 0, 3), (result.FinishReason, result.Recoveries, result.PromptTokens));
        var steps = _channel.Steps;
        Assert.Equal([(StepKind.Prefill, 0), (StepKind.Decode, 3), (StepKind.Decode, 4), (StepKind.Decode, 5)],
            steps.Select(s => (s.Kind, s.StartPosition)));
        Assert.Equal([[1, 2, 3], [100], [101], [102]], steps.Select(TokenIds));
        Assert.Equal([0, 1, 2, 3], steps.Select(s => s.Step));
        long session = steps[0].SessionId;
        Assert.All(steps, s => Assert.Equal(session, s.SessionId));
        Assert.All(_channel.Sent.Where(s => s.Message is ForwardRequest), s => Assert.Equal(1, s.NodeId));
        Assert.Equal([(1, "127.0.0.1:9001", new Swarm.Protocol.LayerRange(0, 2)), (2, "127.0.0.1:9002", new Swarm.Protocol.LayerRange(2, 4))],
            steps[0].Route.Select(h => (h.NodeId, h.Endpoint, h.Layers)));
        Assert.Equal(7UL, steps[0].Sampling.Seed);
        Assert.Equal([(1, session), (2, session)], _channel.Closes);
        AssertNothingInFlight();
        Assert.Equal([new StageMean(1, 0, 2, 1), new StageMean(2, 2, 4, 1)], result.Stages);
        Assert.Equal((1L, 0L, 0), (runner.Completed, runner.Failed, runner.Running));
        var record = Assert.Single(runner.Recent);
        Assert.Equal(("done", 4), (record.State, record.CompletionTokens));
    }

    [Fact]
    public async Task RunAsync_HopFailsMidGeneration_ReroutesAroundItAndReplaysTheSameStepFromPositionZero()
    {
        Serve(1, 0, 2);
        Serve(2, 2, 4);
        Serve(3, 2, 4);
        int? culprit = null;
        _channel.Answer = r =>
        {
            if (r.Step != 2 || culprit is not null) return Compute(r);
            culprit = r.Route[1].NodeId;
            return FailureOf(r, r.Route[1].NodeId, ErrorCode.Internal, "layer 3 crashed");
        };
        using var runner = Runner();

        var result = await runner.RunAsync(Spec(5), null, CancellationToken.None);

        Assert.Equal([100, 101, 102, 103, 104], result.TokenIds);
        Assert.Equal(1, result.Recoveries);
        var steps = _channel.Steps;
        Assert.Equal(6, steps.Count);
        var (failed, replay, next) = (steps[2], steps[3], steps[4]);
        Assert.Equal((2, StepKind.Decode, 4), (failed.Step, failed.Kind, failed.StartPosition));
        Assert.Equal((2, StepKind.Replay, 0), (replay.Step, replay.Kind, replay.StartPosition));
        Assert.Equal([1, 2, 3, 100, 101], TokenIds(replay));
        Assert.NotEqual(failed.SessionId, replay.SessionId);
        Assert.NotEqual(culprit, replay.Route[1].NodeId);
        Assert.Equal(1, replay.Route[0].NodeId);
        Assert.Equal((3, StepKind.Decode, 5, replay.SessionId), (next.Step, next.Kind, next.StartPosition, next.SessionId));
        Assert.Equal([102], TokenIds(next));
        Assert.Equal([(1, failed.SessionId), (culprit!.Value, failed.SessionId), (1, replay.SessionId), (replay.Route[1].NodeId, replay.SessionId)],
            _channel.Closes);
        var blamed = _registry.Get(culprit!.Value)!;
        Assert.Equal((NodeHealth.Suspect, 1), (blamed.Health, blamed.RecentFailures.Count));
        Assert.Empty(_registry.Get(1)!.RecentFailures);
        AssertNothingInFlight();
        Assert.Equal(replay.Route[1].NodeId, result.Stages[1].NodeId);
    }

    [Fact]
    public async Task RunAsync_OverloadedReply_ReleasesBacksOffAndReplaysWithoutBlamingTheNode()
    {
        Serve(1, 0, 4);
        bool refused = false;
        _channel.Answer = r =>
        {
            if (r.Step != 1 || refused) return TokenFor(r, 100 + r.Step);
            refused = true;
            return FailureOf(r, 1, ErrorCode.Overloaded, "KV pool full; session preempted");
        };
        using var runner = Runner();

        var job = runner.RunAsync(Spec(3), null, CancellationToken.None);
        await AdvanceUntilDone(job, TimeSpan.FromMilliseconds(10));
        var result = await job;

        Assert.Equal([100, 101, 102], result.TokenIds);
        Assert.Equal(1, result.Recoveries);
        var sent = _channel.Sent.Where(s => s.Message is ForwardRequest).ToList();
        var (refusedStep, replay) = ((ForwardRequest)sent[1].Message, (ForwardRequest)sent[2].Message);
        Assert.Equal((1, StepKind.Replay, 0), (replay.Step, replay.Kind, replay.StartPosition));
        Assert.Equal([1, 2, 3, 100], TokenIds(replay));
        Assert.NotEqual(refusedStep.SessionId, replay.SessionId);
        Assert.True(sent[2].At - sent[1].At >= TimeSpan.FromMilliseconds(50), $"replayed after {(sent[2].At - sent[1].At).TotalMilliseconds} ms, before the back-off");
        Assert.Contains((1, refusedStep.SessionId), _channel.Closes);
        var node = _registry.Get(1)!;
        Assert.Equal((NodeHealth.Alive, 0), (node.Health, node.RecentFailures.Count));
        AssertNothingInFlight();
    }

    [Fact]
    public async Task RunAsync_RouteNodeGoesSilentAndIsSuspected_StepFailsAtItsPatienceAndIsReplayedElsewhere()
    {
        Serve(1, 0, 2);
        Serve(2, 2, 4);
        Serve(3, 2, 4);
        int? silent = null;
        var silence = TimeSpan.FromMilliseconds(1300);
        _channel.Answer = r =>
        {
            if (r.Step != 3 || silent is not null) return Compute(r);
            // The second hop stops heartbeating while the step is in flight; the others keep beating.
            silent = r.Route[1].NodeId;
            _time.Advance(silence);
            foreach (var n in _registry.Snapshot().Where(n => n.Id != silent)) _registry.Heartbeat(n.Id);
            _registry.Evaluate();
            return null;
        };
        using var runner = Runner();

        var result = await runner.RunAsync(Spec(5), null, CancellationToken.None);

        Assert.Equal([100, 101, 102, 103, 104], result.TokenIds);
        Assert.Equal(1, result.Recoveries);
        var sent = _channel.Sent.Where(s => s.Message is ForwardRequest).ToList();
        var (lost, replay) = ((ForwardRequest)sent[3].Message, (ForwardRequest)sent[4].Message);
        Assert.Equal((3, StepKind.Decode), (lost.Step, lost.Kind));
        Assert.Equal((3, StepKind.Replay, 0), (replay.Step, replay.Kind, replay.StartPosition));
        Assert.DoesNotContain(replay.Route, h => h.NodeId == silent);
        // Replayed as soon as the suspicion was seen — not at the 30 s step timeout.
        Assert.Equal(silence, sent[4].At - sent[3].At);
        Assert.NotEqual(NodeHealth.Alive, _registry.Get(silent!.Value)!.Health);
        AssertNothingInFlight();
    }

    [Fact]
    public async Task RunAsync_StepSlowerThanItsPatienceButNoNodeSuspected_KeepsWaitingForTheReply()
    {
        Serve(1, 0, 4);
        _channel.Answer = r => r.Step == 2 ? null : Compute(r);
        using var runner = Runner();

        var job = runner.RunAsync(Spec(4), null, CancellationToken.None);
        var slow = await _channel.StepSentAsync(r => r.Step == 2);
        // Far past the step's patience (400 ms): the loop checks for silent nodes again and again and finds none.
        for (int i = 0; i < 30; i++)
        {
            _time.Advance(TimeSpan.FromMilliseconds(100));
            _registry.Heartbeat(1);
            _registry.Evaluate();
            await Task.Delay(2);
        }
        Assert.Equal(3, _channel.Steps.Count); // not abandoned, not replayed
        _channel.Deliver(slow.JobId, TokenFor(slow, 102));
        var result = await job;

        Assert.Equal([100, 101, 102, 103], result.TokenIds);
        Assert.Equal(0, result.Recoveries);
        Assert.Equal(4, _channel.Steps.Count);
        Assert.All(_channel.Steps, s => Assert.Equal(slow.SessionId, s.SessionId));
    }

    [Fact]
    public async Task RunAsync_LostNoticeArrivesAfterTheStepAlreadyFailed_DoesNotFailTheReplayToo()
    {
        Serve(1, 0, 2);
        Serve(2, 2, 4);
        Serve(3, 2, 4);
        int? gone = null;
        _channel.Answer = r =>
        {
            if (r.Step != 2 || gone is not null) return TokenFor(r, 100 + r.Step);
            gone = r.Route[1].NodeId;
            _channel.Deliver(r.JobId, FailureOf(r, r.Route[1].NodeId, ErrorCode.NextHopUnreachable, "peer vanished"));
            _registry.MarkLeft(gone!.Value);
            _channel.LoseNode(gone!.Value); // the coordinator's own verdict comes second, for the same session
            return null;
        };
        using var runner = Runner();

        var result = await runner.RunAsync(Spec(4), null, CancellationToken.None);

        Assert.Equal([100, 101, 102, 103], result.TokenIds);
        Assert.Equal(1, result.Recoveries);
        Assert.Equal(5, _channel.Steps.Count);
    }

    [Fact]
    public async Task RunAsync_RouteNodeLostWhileStepInFlight_FailsTheStepAtOnce_LaterNoticesAboutTheOldRouteAreIgnored()
    {
        Serve(1, 0, 2);
        Serve(2, 2, 4);
        Serve(3, 2, 4);
        int? gone = null;
        _channel.Answer = r =>
        {
            if (r.Step == 2 && gone is null)
            {
                gone = r.Route[1].NodeId;
                _registry.MarkLeft(gone!.Value);
                _channel.LoseNode(gone!.Value);
                return null;
            }
            if (r.Step == 3) _channel.LoseNode(gone!.Value); // no longer on the job's route: ignored
            return TokenFor(r, 100 + r.Step);
        };
        using var runner = Runner();

        var result = await runner.RunAsync(Spec(5), null, CancellationToken.None);

        Assert.Equal([100, 101, 102, 103, 104], result.TokenIds);
        Assert.Equal(1, result.Recoveries);
        var replay = _channel.Steps[3];
        Assert.Equal((2, StepKind.Replay), (replay.Step, replay.Kind));
        Assert.DoesNotContain(replay.Route, h => h.NodeId == gone);
        AssertNothingInFlight();
    }

    [Fact]
    public async Task RunAsync_FirstHopDisconnected_BlamesItAndReplaysOnAnotherReplica()
    {
        Serve(1, 0, 4);
        Serve(2, 0, 4);
        int? first = null;
        _channel.Answer = r =>
        {
            if (r.Step == 0)
            {
                first = r.Route[0].NodeId;
                _channel.Disconnected[first!.Value] = true; // drops right after answering the prefill
            }
            return TokenFor(r, 100 + r.Step);
        };
        using var runner = Runner();

        var result = await runner.RunAsync(Spec(3), null, CancellationToken.None);

        Assert.Equal([100, 101, 102], result.TokenIds);
        Assert.Equal(1, result.Recoveries);
        var steps = _channel.Steps;
        Assert.Equal((1, StepKind.Replay, 0), (steps[1].Step, steps[1].Kind, steps[1].StartPosition));
        Assert.NotEqual(first, steps[1].Route[0].NodeId);
        Assert.Single(_registry.Get(first!.Value)!.RecentFailures);
        AssertNothingInFlight();
    }

    [Fact]
    public async Task RunAsync_NoReplyWithinStepTimeout_ReroutesWithoutBlamingAnyNode()
    {
        Serve(1, 0, 4);
        bool timedOut = false;
        _channel.Answer = r =>
        {
            if (timedOut) return TokenFor(r, 100 + r.Step);
            timedOut = true;
            _time.Advance(TimeSpan.FromSeconds(2));
            return null;
        };
        using var runner = Runner(new JobRunnerOptions { NumLayers = Layers, ContextLength = 64, StepTimeout = TimeSpan.FromSeconds(2) });

        var result = await runner.RunAsync(Spec(2), null, CancellationToken.None);

        Assert.Equal([100, 101], result.TokenIds);
        Assert.Equal(1, result.Recoveries);
        var sent = _channel.Sent.Where(s => s.Message is ForwardRequest).ToList();
        Assert.Equal(TimeSpan.FromSeconds(2), sent[1].At - sent[0].At);
        Assert.Equal(StepKind.Prefill, ((ForwardRequest)sent[1].Message).Kind);
        Assert.Empty(_registry.Get(1)!.RecentFailures);
    }

    [Fact]
    public async Task RunAsync_EveryAttemptFails_GivesUpWith503AfterMaxRecoveriesAndReleasesEachRoute()
    {
        Serve(1, 0, 4);
        _channel.Answer = r => FailureOf(r, 1, ErrorCode.Internal, "broken stage");
        using var runner = Runner(new JobRunnerOptions { NumLayers = Layers, ContextLength = 64, MaxRecoveriesPerJob = 1 });

        var e = await Assert.ThrowsAsync<JobFailedException>(() => runner.RunAsync(Spec(3), null, CancellationToken.None));

        Assert.Equal((503, "recovery_failed"), (e.HttpStatus, e.Code));
        Assert.Equal("gave up after 1 route repairs at step 0: broken stage", e.Message);
        var steps = _channel.Steps;
        Assert.Equal(2, steps.Count);
        Assert.Equal(steps.Select(s => (1, s.SessionId)), _channel.Closes);
        AssertNothingInFlight();
        Assert.Equal((0L, 1L, 0), (runner.Completed, runner.Failed, runner.Running));
        var record = Assert.Single(runner.Recent);
        Assert.Equal(("failed", e.Message, 2), (record.State, record.Error, record.Recoveries)); // both failed routes count
    }

    [Fact]
    public async Task RunAsync_StopTokenSampled_FinishesWithStopAfterIt()
    {
        Serve(1, 0, 4);
        using var runner = Runner();

        var result = await runner.RunAsync(Spec(10, stopTokenIds: [102]), null, CancellationToken.None);

        Assert.Equal([100, 101, 102], result.TokenIds);
        Assert.Equal("stop", result.FinishReason);
        Assert.Equal(3, _channel.Steps.Count);
        Assert.Equal([(1, _channel.Steps[0].SessionId)], _channel.Closes);
    }

    [Fact]
    public async Task RunAsync_Cancelled_ReleasesTheRouteAndTheSlot()
    {
        Serve(1, 0, 2);
        Serve(2, 2, 4);
        _channel.Answer = r => r.Step == 2 ? null : TokenFor(r, 100 + r.Step);
        using var runner = Runner();
        using var cts = new CancellationTokenSource();

        var job = runner.RunAsync(Spec(5), null, cts.Token);
        var stuck = await _channel.StepSentAsync(r => r.Step == 2);
        Assert.Equal(1, runner.Running);
        Assert.All(_registry.Snapshot(), n => Assert.Equal(1, n.InFlight));
        cts.Cancel();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => job);
        Assert.Equal([(1, stuck.SessionId), (2, stuck.SessionId)], _channel.Closes);
        AssertNothingInFlight();
        Assert.Equal((0, 0L), (runner.Running, runner.Failed));
        Assert.Equal(("cancelled", "the client went away", 2), (runner.Recent.Single().State, runner.Recent.Single().Error, runner.Recent.Single().CompletionTokens));
    }

    [Fact]
    public async Task RunAsync_AllSlotsBusyAndNoQueue_RefusesWith429()
    {
        Serve(1, 0, 4);
        _channel.Answer = _ => null;
        using var runner = Runner(new JobRunnerOptions { NumLayers = Layers, ContextLength = 64, MaxConcurrentJobs = 1, MaxQueueLength = 0 });
        using var cts = new CancellationTokenSource();
        var first = runner.RunAsync(Spec(2), null, cts.Token);
        await _channel.StepSentAsync(_ => true);

        var e = await Assert.ThrowsAsync<JobFailedException>(() => runner.RunAsync(Spec(2), null, CancellationToken.None));

        Assert.Equal((429, "queue_full"), (e.HttpStatus, e.Code));
        Assert.Equal("running", Assert.Single(runner.Recent).State); // the refused job is not listed
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => first);
    }

    [Fact]
    public async Task RunAsync_LayersUncoveredForTheQueueTimeout_FailsWith503NamingThem()
    {
        Serve(1, 0, 2);
        using var runner = Runner(new JobRunnerOptions { NumLayers = Layers, ContextLength = 64, QueueTimeout = TimeSpan.FromSeconds(1) });

        _time.Advance(new JobRunnerOptions { NumLayers = Layers, ContextLength = 64 }.AdmissionTickInterval); // the gate reads coverage

        var job = runner.RunAsync(Spec(2), null, CancellationToken.None);
        Assert.Equal(1, runner.Queued);
        await AdvanceUntilDone(job, TimeSpan.FromMilliseconds(50));

        var e = await Assert.ThrowsAsync<JobFailedException>(() => job);
        Assert.Equal((503, "layers_uncovered"), (e.HttpStatus, e.Code));
        Assert.StartsWith("no route: layers 2-3 are not served by any node", e.Message);
        Assert.Empty(_channel.Sent);
        Assert.Empty(runner.Recent);
    }

    [Fact]
    public async Task CoordinatorsRunner_RunsJobsOnTheCoordinatorsClock()
    {
        // The production constructor (what the coordinator's DI builds): its queue timeout must run on the clock the
        // coordinator was given. On the system clock the job below would wait 30 real seconds, not 31 fake ones.
        string checkpoint = Path.Combine(Swarm.Tests.Model.Fixture.Root, Swarm.Tests.Model.Fixture.Tiny, "checkpoint");
        await using var swarm = new SwarmCoordinator(new CoordinatorOptions { Model = checkpoint, Listen = "127.0.0.1:0", QueueTimeout = TimeSpan.FromSeconds(30) },
            NullLogger<SwarmCoordinator>.Instance, _time);
        Assert.Equal(_time.GetUtcNow(), swarm.StartedAt);
        using var runner = new JobRunner(swarm, NullLogger<JobRunner>.Instance);

        var job = runner.RunAsync(Spec(2), null, CancellationToken.None);
        for (int s = 0; s < 60 && !job.IsCompleted; s++)
        {
            _time.Advance(TimeSpan.FromSeconds(1));
            await Task.WhenAny(job, Task.Delay(1));
        }

        Assert.True(job.IsCompleted, "the queue timeout did not follow the coordinator's clock");
        var e = await Assert.ThrowsAsync<JobFailedException>(() => job);
        Assert.Equal((503, "layers_uncovered"), (e.HttpStatus, e.Code));
    }
}
