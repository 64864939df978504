using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Swarm.Coordinator.Jobs;
using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Routing;
using Swarm.Coordinator.Service;
using Swarm.Coordinator.Verification;
using Swarm.Protocol;
using Swarm.Sampling;
using Swarm.Tests.Coordinator.Jobs;
using Xunit;
using static Swarm.Tests.Coordinator.Jobs.FakeStepChannel;

namespace Swarm.Tests.Verification;

/// <summary>
/// Spot checks do not hold up the steps they check: the job accepts the route's answer at once and the check is judged
/// when the shadow's answer arrives. Through <see cref="JobRunner"/> with the real registry, router, spot checker and ban
/// board, a <see cref="FakeStepChannel"/> whose shadow answers the test holds back, and a fake clock. Node 1 is ten
/// times faster than the others, so the router always puts the one-hop route on it while it serves; the others are its
/// shadows and arbiters. A liar answers 900 + step, an honest node 100 + step.
/// </summary>
public sealed class AsyncCheckTests
{
    private const int Layers = 4, NewTokens = 6;
    private static readonly int[] Prompt = [1, 2, 3];
    private static readonly int[] Honest = [.. Enumerable.Range(100, NewTokens)];

    private readonly FakeTimeProvider _time = new();
    private readonly NodeRegistry _registry;
    private readonly FakeStepChannel _channel;
    private readonly BanBoard _bans;
    private readonly List<ForwardRequest> _held = [];   // shadow copies whose answers the test has not delivered yet

    public AsyncCheckTests()
    {
        _registry = new NodeRegistry(new FailureDetectorOptions(), _time);
        _channel = new FakeStepChannel(_time);
        _bans = new BanBoard(_registry, _time, TimeSpan.FromHours(1));
    }

    private JobRunner Runner(VerificationOptions verification) =>
        new(new JobRunnerOptions { NumLayers = Layers, ContextLength = 64, Verification = verification }, _registry,
            new ShortestPathRouter(new RoutingOptions(), new PowerOfTwoChoicesPolicy(new Random(1))), _channel, null, _time,
            NullLogger.Instance, bans: _bans);

    private void Serve(int id, double throughput = 1000) => _registry.Register(new NodeInfo
    {
        Id = id, Name = $"node-{id}", Endpoint = $"127.0.0.1:{9000 + id}", MemoryBudgetBytes = 1L << 30, LayerThroughput = throughput,
    }, new LayerRange(0, Layers));

    private static JobSpec Spec() => new(Prompt, new SamplingOptions { MaxNewTokens = NewTokens, Seed = 7 }, []);

    /// <summary>A last stage's answer with its fingerprint (every node's hidden states agree; only the token tells a liar).</summary>
    private TokenResult Answer(ForwardRequest r, bool lies)
    {
        _time.Advance(TimeSpan.FromMilliseconds(5));
        return TokenFor(r, (lies ? 900 : 100) + r.Step) with
        {
            Fingerprints = [.. r.Route.Select(h => new StageFingerprint
            {
                NodeId = h.NodeId, Input = [], Output = [.. Enumerable.Range(1, StageFingerprint.Width).Select(v => (float)v)],
            })],
        };
    }

    /// <summary>Delivers the held shadow answers of steps before <paramref name="step"/> (all when null), honest ones.</summary>
    private void DeliverHeld(int? step = null)
    {
        var due = _held.Where(r => step is null || r.Step < step).ToList();
        foreach (var r in due)
        {
            _held.Remove(r);
            _channel.Deliver(r.JobId, Answer(r, lies: false));
        }
    }

    /// <summary>Every session a step was sent to was closed on that node, and no node is left with in-flight work.</summary>
    private void AssertNothingLeaks()
    {
        var opened = _channel.Sent.Where(s => s.Message is ForwardRequest).Select(s => (s.NodeId, s.SessionId)).Distinct();
        Assert.All(opened, o => Assert.Contains(o, _channel.Closes));
        Assert.All(_registry.Snapshot(), n => Assert.Equal(0, n.InFlight));
    }

    [Fact]
    public async Task Unstreamed_LiarCaughtAfterItsCheckedStepWasAccepted_IsBannedAndTheJobReturnsTheGoldenTokens()
    {
        Serve(1, throughput: 10_000);
        Serve(2);
        Serve(3);
        _channel.Answer = r =>
        {
            bool liarServes = _registry.Get(1) is { Banned: false };
            if (r.Route[0].NodeId == 1)
            {
                if (r.Step == 2) DeliverHeld(2); // the shadow's answers to steps 0 and 1 arrive while the liar already runs step 2
                return Answer(r, lies: true);
            }
            if (liarServes && r.Kind != StepKind.Replay) { _held.Add(r); return null; } // a shadow copy: answered late
            return Answer(r, lies: false); // the arbiter's replay, and every step after the ban
        };
        using var runner = Runner(new VerificationOptions { Rate = 1 });

        var result = await runner.RunAsync(Spec(), null, CancellationToken.None);

        Assert.Equal(Honest, result.TokenIds);
        var sent = _channel.Sent.Select(s => s.Message).OfType<ForwardRequest>().ToList();
        int liarsThirdStep = sent.FindIndex(m => m.Route[0].NodeId == 1 && m.Step == 2);
        var arbitrations = sent.Where(m => m.Route[0].NodeId != 1 && m.Kind == StepKind.Replay && m.StartPosition == 0 && m.Step < 3).ToList();
        Assert.InRange(liarsThirdStep, 0, sent.IndexOf(arbitrations.Single()) - 1); // its tokens were accepted and built on before they were judged
        Assert.Equal(3, result.RecomputedTokens); // all three of its tokens were generated again
        // One arbitration and one failed check: the check of step 1, judged after the ban, was moot and dropped.
        var liar = _registry.Get(1)!;
        Assert.True(liar.Banned);
        Assert.Equal(1, liar.ChecksFailed);
        Assert.All(_registry.Snapshot().Where(n => n.Id != 1), n => Assert.Equal(0, n.ChecksFailed));
        AssertNothingLeaks();
    }

    [Fact]
    public async Task StreamVerifiedOnly_PendingChecks_HoldTheStreamAndTheJobsCompletionUntilTheShadowAnswers()
    {
        Serve(1, throughput: 10_000);
        Serve(2);
        _channel.Answer = r =>
        {
            if (r.Route[0].NodeId == 2) { _held.Add(r); return null; }
            return Answer(r, lies: false);
        };
        using var runner = Runner(new VerificationOptions { Rate = 0.001, StreamVerifiedOnly = true }); // fresh nodes: always checked
        var streamed = new List<int>();

        var job = runner.RunAsync(Spec(), d => { lock (streamed) streamed.AddRange(d.TokenIds); return ValueTask.CompletedTask; }, CancellationToken.None);
        await _channel.StepSentAsync(r => r.Route[0].NodeId == 1 && r.Step == NewTokens - 1);
        await Task.WhenAny(job, Task.Delay(TimeSpan.FromMilliseconds(300)));

        // Every step ran without waiting for its check, but no token went out and the job did not end.
        Assert.False(job.IsCompleted);
        lock (streamed) Assert.Empty(streamed);
        Assert.Equal(NewTokens, _held.Count);
        DeliverHeld();
        var result = await job;
        Assert.Equal(Honest, streamed);
        Assert.Equal(Honest, result.TokenIds);
        Assert.All(_registry.Snapshot(), n => Assert.Equal((NewTokens, 0), (n.ChecksPassed, n.ChecksFailed)));
        AssertNothingLeaks();
    }

    [Fact]
    public void ChecksJudgedOutOfOrder_APassVouchesUpToItsStepAndABanReachesBackToTheCaughtStep()
    {
        Serve(1);
        var t0 = _time.GetUtcNow();
        _registry.RecordCheck(1, passed: true, stepAt: t0 + TimeSpan.FromSeconds(10)); // another job's later step passed first
        _registry.RecordCheck(1, passed: true, stepAt: t0 + TimeSpan.FromSeconds(3));  // an earlier step judged later
        Assert.Equal(t0 + TimeSpan.FromSeconds(10), _registry.Get(1)!.LastPassedCheck);
        NodeBan? ban = null;
        _bans.Banned += b => ban = b;

        Assert.True(_bans.Ban(1, "its step at t0 + 5 s disagreed", caughtAt: t0 + TimeSpan.FromSeconds(5)));

        // The lie at t0 + 5 s predates the last pass (t0 + 10 s), yet the jobs that used it must still rewind it.
        Assert.True(ban!.Since < t0 + TimeSpan.FromSeconds(5));
        Assert.True(ban.Since > t0 + TimeSpan.FromSeconds(3));
    }

    [Fact]
    public async Task CancelledWhileChecksArePending_ClosesTheShadowSessionAndReleasesEverything()
    {
        Serve(1, throughput: 10_000);
        Serve(2);
        _channel.Answer = r =>
        {
            if (r.Route[0].NodeId == 2) { _held.Add(r); return null; }
            return Answer(r, lies: false);
        };
        using var runner = Runner(new VerificationOptions { Rate = 1 });
        using var cts = new CancellationTokenSource();

        var job = runner.RunAsync(Spec(), null, cts.Token);
        await _channel.StepSentAsync(r => r.Route[0].NodeId == 1 && r.Step == NewTokens - 1);
        await Task.WhenAny(job, Task.Delay(TimeSpan.FromMilliseconds(100)));
        Assert.False(job.IsCompleted);   // waiting for its checks
        cts.Cancel();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => job);
        Assert.Contains(_channel.Closes, c => c.Node == 2);
        AssertNothingLeaks();
        Assert.All(_registry.Snapshot(), n => Assert.Equal((0, 0), (n.ChecksPassed, n.ChecksFailed))); // dropped unjudged
    }

    [Fact]
    public async Task ShadowNeverAnswers_JobCompletesAfterThePatience_CountedAsTimeoutAndNobodyIsBlamed()
    {
        Serve(1, throughput: 10_000);
        Serve(2);
        _channel.Answer = r => r.Route[0].NodeId == 2 ? null : Answer(r, lies: false); // the shadow stays silent
        var options = new VerificationOptions { Rate = 1 };
        using var runner = Runner(options);
        long timeouts = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Name == "swarm.verification.checks") l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            foreach (var tag in tags)
                if (tag is { Key: "outcome", Value: "timeout" }) Interlocked.Add(ref timeouts, value);
        });
        listener.Start();

        var job = runner.RunAsync(Spec(), null, CancellationToken.None);
        await _channel.StepSentAsync(r => r.Route[0].NodeId == 1 && r.Step == NewTokens - 1);
        Assert.False(job.IsCompleted);
        // The job waits for the shadow's answers on the job's (fake) clock, up to their patience.
        for (int i = 0; i < 100 && !job.IsCompleted; i++)
        {
            _time.Advance(options.ShadowPatience / 10);
            await Task.WhenAny(job, Task.Delay(20));
        }

        var result = await job;
        Assert.Equal(Honest, result.TokenIds);
        Assert.Equal(0, result.RecomputedTokens);
        Assert.True(Interlocked.Read(ref timeouts) >= NewTokens, $"{timeouts} timeouts counted");
        Assert.All(_registry.Snapshot(), n => Assert.Equal((0, 0, false), (n.ChecksPassed, n.ChecksFailed, n.Banned)));
        AssertNothingLeaks();
    }
}
