using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Swarm.Coordinator.Jobs;
using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Routing;
using Swarm.Coordinator.Service;
using Swarm.Coordinator.Speculation;
using Swarm.Protocol;
using Swarm.Sampling;
using Xunit;
using static Swarm.Tests.Coordinator.Jobs.FakeStepChannel;

namespace Swarm.Tests.Coordinator.Jobs;

/// <summary>
/// Speculative jobs through <see cref="JobRunner"/> against a fake pipeline that behaves like real stages: it keeps each
/// session's cached token ids, truncates them to every step's start position, and verifies drafts greedily against a
/// deterministic "model" (a period-3 repetition with a surprise token every fifth position, so prompt lookup drafts well
/// and is also wrong regularly). The output must equal plain decoding token for token — with stops, token limits and
/// replays — while passes carry drafts and need fewer round trips.
/// </summary>
public sealed class JobSpeculationTests
{
    private static readonly int[] Prompt = [100, 101, 102];
    private readonly FakeTimeProvider _time = new();
    private readonly NodeRegistry _registry;
    private readonly FakeStepChannel _channel;
    private readonly Dictionary<long, List<int>> _caches = new();

    public JobSpeculationTests()
    {
        _registry = new NodeRegistry(new FailureDetectorOptions(), _time);
        _channel = new FakeStepChannel(_time) { Answer = Verify };
        Serve(1, 0, 2);
        Serve(2, 2, 4);
    }

    private void Serve(int id, int start, int end) => _registry.Register(new NodeInfo
    {
        Id = id, Name = $"node-{id}", Endpoint = $"127.0.0.1:{9000 + id}", MemoryBudgetBytes = 1L << 30, LayerThroughput = 1000,
    }, new LayerRange(start, end));

    /// <summary>The fake model's greedy next token after <paramref name="context"/>: tokens 100…125 (letters a…z).</summary>
    private static int Next(IReadOnlyList<int> context) =>
        context.Count % 5 == 0 ? 100 + context.Count % 26 : context[^3];

    private static int[] Plain(int n)
    {
        var seq = new List<int>(Prompt);
        for (int i = 0; i < n; i++) seq.Add(Next(seq));
        return [.. seq.Skip(Prompt.Length)];
    }

    /// <summary>A two-stage route's answer: the session's cache truncated to the step's start, extended, its draft verified.</summary>
    private TokenResult Verify(ForwardRequest r)
    {
        if (!_caches.TryGetValue(r.SessionId, out var cache)) _caches[r.SessionId] = cache = [];
        Assert.True(r.StartPosition <= cache.Count, $"step {r.Step} starts at {r.StartPosition}, the cache holds {cache.Count}");
        cache.RemoveRange(r.StartPosition, cache.Count - r.StartPosition);
        cache.AddRange(TokenIds(r));
        int known = cache.Count - r.Draft.Length;   // positions before the draft
        var produced = new List<int>();
        for (int i = 0; i <= r.Draft.Length; i++)
        {
            int t = Next(cache.Take(known + i).ToList());
            produced.Add(t);
            if (i == r.Draft.Length || r.Draft[i] != t) break;
        }
        return TokenFor(r, produced[0]) with { Accepted = r.Draft.Length > 0 ? [.. produced] : [] };
    }

    private JobRunner Runner(SpeculationMode mode, int maxDraft = 4) =>
        new(new JobRunnerOptions
        {
            NumLayers = 4, ContextLength = 256, Speculation = new SpeculationOptions { Mode = mode, MaxDraft = maxDraft },
        }, _registry, new ShortestPathRouter(new RoutingOptions(), new PowerOfTwoChoicesPolicy(new Random(1))), _channel,
            MapTokenizer.Letters(), _time, NullLogger.Instance);

    private static JobSpec Spec(int maxNewTokens, IReadOnlyList<string>? stops = null) =>
        new(Prompt, new SamplingOptions { MaxNewTokens = maxNewTokens, Seed = 7 }, stops ?? []);

    private static async Task<(JobResult Result, List<int> Ids, string Text)> StreamAsync(JobRunner runner, JobSpec spec)
    {
        var ids = new List<int>();
        var text = new System.Text.StringBuilder();
        var result = await runner.RunAsync(spec, d => { ids.AddRange(d.TokenIds); text.Append(d.Text); return ValueTask.CompletedTask; }, CancellationToken.None);
        return (result, ids, text.ToString());
    }

    [Fact]
    public async Task Ngram_GreedyOutputEqualsPlainDecoding_InFewerPasses_DraftsNeverPastTheLimit()
    {
        using var runner = Runner(SpeculationMode.Ngram);

        var (result, streamed, _) = await StreamAsync(runner, Spec(40));

        Assert.Equal(Plain(40), result.TokenIds);
        Assert.Equal(result.TokenIds, streamed);
        var sp = Assert.IsType<SpeculationCounts>(result.Speculation);
        var steps = _channel.Steps;
        Assert.Equal(steps.Count, sp.Passes);
        Assert.Equal(40, sp.Passes + sp.Accepted);             // every pass: its accepted drafts plus one token
        Assert.Equal(steps.Sum(s => s.Draft.Length), sp.Drafted);
        Assert.True(sp.Passes <= 25, $"{sp.Passes} passes for 40 tokens: the drafts barely helped");
        Assert.True(sp.Drafted > sp.Accepted, "no draft was ever rejected: the rollback was not exercised");
        Assert.All(steps, s => Assert.InRange(s.Draft.Length, 0, Math.Min(4, 40 - s.Step - 1)));
        Assert.Equal(0, steps[0].StartPosition);
        Assert.All(steps.Skip(1), s => Assert.Equal(Prompt.Length + s.Step - 1, s.StartPosition)); // rejected positions dropped
    }

    [Fact]
    public async Task SpeculationOff_StepsCarryNoDraft_AndTheResultHasNoFigures()
    {
        using var runner = Runner(SpeculationMode.None);

        var (result, _, _) = await StreamAsync(runner, Spec(12));

        Assert.Equal(Plain(12), result.TokenIds);
        Assert.All(_channel.Steps, s => Assert.Empty(s.Draft));
        Assert.Equal(12, _channel.Steps.Count);
        Assert.Null(result.Speculation);
    }

    [Theory]
    [InlineData(7)]
    [InlineData(9)]
    [InlineData(1)]
    public async Task TokenLimitInsideAnAcceptedRun_ExactlyTheLimit(int maxNew)
    {
        using var runner = Runner(SpeculationMode.Ngram);

        var (result, streamed, _) = await StreamAsync(runner, Spec(maxNew));

        Assert.Equal(Plain(maxNew), result.TokenIds);
        Assert.Equal(result.TokenIds, streamed);
        Assert.Equal("length", result.FinishReason);
    }

    [Theory]
    [InlineData("fab")]   // inside a run the drafts get right
    [InlineData("bfa")]
    [InlineData("k")]
    public async Task StopSequenceInsideAnAcceptedRun_CutsLikePlainDecoding(string stop)
    {
        using var plainRunner = Runner(SpeculationMode.None);
        var plain = await StreamAsync(plainRunner, Spec(40, [stop]));
        _channel.Answer = Verify;
        using var runner = Runner(SpeculationMode.Ngram);

        var spec = await StreamAsync(runner, Spec(40, [stop]));

        Assert.Equal("stop", plain.Result.FinishReason);
        Assert.Equal((plain.Result.FinishReason, plain.Result.Text), (spec.Result.FinishReason, spec.Result.Text));
        Assert.Equal(plain.Result.TokenIds, spec.Result.TokenIds);
        Assert.Equal(spec.Result.Text, spec.Text);
        Assert.Equal(spec.Result.TokenIds, spec.Ids);
        Assert.DoesNotContain(stop, spec.Text);
    }

    [Fact]
    public async Task OverloadedMidJob_ReplayCarriesTheSameDraft_OutputUnchanged()
    {
        ForwardRequest? refused = null;
        _channel.Answer = r =>
        {
            if (refused is null && r.Step >= 8 && r.Draft.Length > 0)
            {
                refused = r;
                return FailureOf(r, 2, ErrorCode.Overloaded, "KV pool full");
            }
            return Verify(r);
        };
        using var runner = Runner(SpeculationMode.Ngram);

        var job = StreamAsync(runner, Spec(30));
        for (int i = 0; i < 10_000 && !job.IsCompleted; i++)
        {
            _time.Advance(TimeSpan.FromMilliseconds(10));
            await Task.WhenAny(job, Task.Delay(1));
        }
        var (result, _, _) = await job;

        Assert.NotNull(refused);
        Assert.Equal(Plain(30), result.TokenIds);
        Assert.Equal(1, result.Recoveries);
        var replay = _channel.Steps.Single(s => s.Kind == StepKind.Replay);
        Assert.Equal((refused.Step, 0), (replay.Step, replay.StartPosition));
        Assert.Equal(refused.Draft, replay.Draft);
    }

    [Fact]
    public async Task LastStageAcceptsWhatWasNotDrafted_IsBanned_StepReplayed_UnstreamedOutputUnchanged()
    {
        Serve(3, 2, 4);   // the lying last stage is banned: the replay needs another last stage
        bool lied = false;
        _channel.Answer = r =>
        {
            var honest = Verify(r);
            if (lied || r.Draft.Length < 2) return honest;
            lied = true;
            return honest with { Accepted = [honest.TokenId, 1000, 1000] };   // 1000 is never drafted
        };
        using var runner = Runner(SpeculationMode.Ngram);

        var job = runner.RunAsync(Spec(20), null, CancellationToken.None);   // unstreamed: the ban's rewind recomputes
        for (int i = 0; i < 10_000 && !job.IsCompleted; i++)
        {
            _time.Advance(TimeSpan.FromMilliseconds(10));
            await Task.WhenAny(job, Task.Delay(1));
        }
        var result = await job;

        Assert.True(lied);
        Assert.Equal(Plain(20), result.TokenIds);
        Assert.True(result.Recoveries >= 1);
        Assert.Single(_registry.Snapshot(), n => n.Banned);   // an answer no honest last stage gives is proof: its node is banned
    }
}
