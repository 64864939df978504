using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Swarm.Coordinator.Jobs;
using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Routing;
using Swarm.Coordinator.Service;
using Swarm.Protocol;
using Swarm.Sampling;
using Swarm.Tokenization;
using Xunit;
using static Swarm.Tests.Coordinator.Jobs.FakeStepChannel;

namespace Swarm.Tests.Coordinator.Jobs;

/// <summary>
/// What a job shows the outside while and after it runs, through <see cref="JobRunner"/> with a
/// <see cref="FakeStepChannel"/> (token 100 + step per step) and a fake clock: the streamed text and token ids agree
/// exactly with the result (stop sequences never streamed, one rule for an incomplete last character), completion ids,
/// outcomes, and live progress of running jobs in the status table.
/// </summary>
public sealed class JobOutputTests
{
    private static readonly TimeSpan StepTime = TimeSpan.FromMilliseconds(5);

    private readonly FakeTimeProvider _time = new();
    private readonly NodeRegistry _registry;
    private readonly FakeStepChannel _channel;

    public JobOutputTests()
    {
        _registry = new NodeRegistry(new FailureDetectorOptions(), _time);
        _channel = new FakeStepChannel(_time);
        _registry.Register(new NodeInfo
        {
            Id = 1, Name = "node-1", Endpoint = "127.0.0.1:9001", MemoryBudgetBytes = 1L << 30, LayerThroughput = 1000,
        }, new LayerRange(0, 4));
        _channel.Answer = r =>
        {
            _time.Advance(StepTime);
            return TokenFor(r, 100 + r.Step);
        };
    }

    private JobRunner Runner(ITextTokenizer? tokenizer = null, int maxConcurrentJobs = 16) =>
        new(new JobRunnerOptions { NumLayers = 4, ContextLength = 64, MaxConcurrentJobs = maxConcurrentJobs }, _registry,
            new ShortestPathRouter(new RoutingOptions(), new PowerOfTwoChoicesPolicy(new Random(1))), _channel, tokenizer, _time, NullLogger.Instance);

    private static JobSpec Spec(int maxNewTokens, IReadOnlyList<string>? stops = null, IReadOnlyList<int>? stopTokenIds = null) =>
        new([1, 2, 3], new SamplingOptions { MaxNewTokens = maxNewTokens, Seed = 7, StopTokenIds = stopTokenIds ?? [] }, stops ?? []);

    /// <summary>What a streaming client receives: each callback's token ids and text, in order.</summary>
    private sealed record Streamed(JobResult Result, List<(int[] Ids, string Text)> Deltas)
    {
        public string Text => string.Concat(Deltas.Select(d => d.Text));
        public int[] Ids => [.. Deltas.SelectMany(d => d.Ids)];
    }

    private static async Task<Streamed> StreamAsync(JobRunner runner, JobSpec spec, CancellationToken ct = default)
    {
        var deltas = new List<(int[] Ids, string Text)>();
        var result = await runner.RunAsync(spec, d => { deltas.Add(([.. d.TokenIds], d.Text)); return ValueTask.CompletedTask; }, ct);
        return new Streamed(result, deltas);
    }

    /// <summary>The stream and the result agree exactly: text and token ids.</summary>
    private static void AssertStreamEqualsResult(Streamed s)
    {
        Assert.Equal(s.Result.Text, s.Text);
        Assert.Equal(s.Result.TokenIds, s.Ids);
    }

    [Fact]
    public async Task RunAsync_StopSequenceSpansTwoTokens_NoPartOfItIsStreamed_TokenIdsIncludeItsTokens()
    {
        using var runner = Runner(MapTokenizer.Letters());

        var s = await StreamAsync(runner, Spec(10, stops: ["cd"]));

        Assert.Equal(("stop", "ab"), (s.Result.FinishReason, s.Result.Text));
        Assert.Equal([100, 101, 102, 103], s.Result.TokenIds);
        AssertStreamEqualsResult(s);
        Assert.Equal(["a", "b", "", ""], s.Deltas.Select(d => d.Text));
    }

    [Fact]
    public async Task RunAsync_TextThatOnlyBeginsAStopSequence_IsHeldBackUntilItCannotBeOne()
    {
        using var runner = Runner(MapTokenizer.Letters());

        var s = await StreamAsync(runner, Spec(5, stops: ["bd"]));

        Assert.Equal(("length", "abcde"), (s.Result.FinishReason, s.Result.Text));
        AssertStreamEqualsResult(s);
        Assert.Equal(["a", "", "bc", "d", "e"], s.Deltas.Select(d => d.Text));
    }

    [Fact]
    public async Task RunAsync_HeldBackTextWhenTheTokenLimitIsReached_IsSentAtTheEnd()
    {
        using var runner = Runner(MapTokenizer.Letters());

        var s = await StreamAsync(runner, Spec(3, stops: ["cx"]));

        Assert.Equal(("length", "abc"), (s.Result.FinishReason, s.Result.Text));
        AssertStreamEqualsResult(s);
    }

    [Fact]
    public async Task RunAsync_StopSequenceInsideOneToken_TheTextBeforeItIsStreamed()
    {
        using var runner = Runner(MapTokenizer.OfText("def", " f():", "\n\n", "class"));

        var s = await StreamAsync(runner, Spec(10, stops: ["():"]));

        Assert.Equal(("stop", "def f"), (s.Result.FinishReason, s.Result.Text));
        Assert.Equal([100, 101], s.Result.TokenIds);
        AssertStreamEqualsResult(s);
    }

    [Fact]
    public async Task RunAsync_StopTokenId_ItsTextIsNotPartOfTheCompletion_ItsIdIs()
    {
        using var runner = Runner(MapTokenizer.OfText("x = 1", "\n", "<|endoftext|>"));

        var s = await StreamAsync(runner, Spec(10, stopTokenIds: [102]));

        Assert.Equal(("stop", "x = 1\n"), (s.Result.FinishReason, s.Result.Text));
        Assert.Equal([100, 101, 102], s.Result.TokenIds);
        AssertStreamEqualsResult(s);
    }

    [Fact]
    public async Task RunAsync_IncompleteUtf8CharacterAtTheEnd_IsOneReplacementCharacterInBothModes()
    {
        // "a", then é split over two tokens, then the first byte of a three-byte character the limit cuts off.
        using var runner = Runner(new MapTokenizer([(byte)'a'], [0xC3], [0xA9], [0xE2]));

        var s = await StreamAsync(runner, Spec(4));

        Assert.Equal("aé\uFFFD", s.Result.Text);
        AssertStreamEqualsResult(s);
        Assert.Equal(["a", "", "é", "", "\uFFFD"], s.Deltas.Select(d => d.Text));
    }

    [Fact]
    public async Task RunAsync_CompletionIds_OnePerJob_SameSchemeEverywhere_DifferentAfterARestart()
    {
        using var first = Runner();
        var a = await first.RunAsync(Spec(1), null, CancellationToken.None);
        var b = await StreamAsync(first, Spec(1));
        using var restarted = Runner();
        var c = await restarted.RunAsync(Spec(1), null, CancellationToken.None);

        var scheme = new Regex("^cmpl-([a-z0-9]{8})-([0-9]+)$");
        var ids = new[] { a.Id, b.Result.Id, c.Id }.Select(id => scheme.Match(id)).ToList();
        Assert.All(ids, m => Assert.True(m.Success, $"'{m.Value}' does not match {scheme}"));
        Assert.Equal(ids[0].Groups[1].Value, ids[1].Groups[1].Value);
        Assert.NotEqual(a.Id, b.Result.Id);
        Assert.NotEqual(ids[0].Groups[1].Value, ids[2].Groups[1].Value);
    }

    [Fact]
    public async Task RunAsync_RunningJob_ShowsTokensSoFarTtftAndRateInTheStatusTable()
    {
        _channel.Answer = r =>
        {
            if (r.Step == 3) return null; // the fourth step hangs
            _time.Advance(StepTime);
            return TokenFor(r, 100 + r.Step);
        };
        using var runner = Runner();
        using var cts = new CancellationTokenSource();
        var job = runner.RunAsync(Spec(10), null, cts.Token);
        await _channel.StepSentAsync(r => r.Step == 3);

        var running = Assert.Single(runner.Recent);
        Assert.Equal(("running", 3), (running.State, running.CompletionTokens));
        Assert.Equal(5.0, running.TtftMs);          // the prefill step took 5 ms
        Assert.Equal(200.0, running.TokensPerSecond); // 2 tokens in the 10 ms since the first
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => job);
    }

    [Fact]
    public async Task RunAsync_ClientGoesAwayWhileQueued_LeavesNoRecordNorQueueEntry_CountsAsCancelled()
    {
        _channel.Answer = r => r.Step == 1 ? null : TokenFor(r, 100 + r.Step);
        using var runner = Runner(maxConcurrentJobs: 1);
        using var firstGone = new CancellationTokenSource();
        using var secondGone = new CancellationTokenSource();
        var first = runner.RunAsync(Spec(4), null, firstGone.Token);
        await _channel.StepSentAsync(r => r.Step == 1);
        var second = runner.RunAsync(Spec(4), null, secondGone.Token);
        Assert.Equal((1, 1), (runner.Running, runner.Queued));
        Assert.Equal(["queued", "running"], runner.Recent.Select(r => r.State).Order());

        secondGone.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => second);

        Assert.Equal((1, 0), (runner.Running, runner.Queued));
        Assert.Equal("running", Assert.Single(runner.Recent).State);
        Assert.Equal((0L, 0L, 1L), (runner.Completed, runner.Failed, runner.Cancelled));
        firstGone.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => first);
        Assert.Equal(2L, runner.Cancelled);
        Assert.Equal("cancelled", Assert.Single(runner.Recent).State);
    }

    [Fact]
    public async Task RunAsync_ClientGoesAwayWhileRunning_IsCancelledNotFailed()
    {
        _channel.Answer = r => r.Step == 2 ? null : TokenFor(r, 100 + r.Step);
        using var runner = Runner();
        using var cts = new CancellationTokenSource();
        var job = runner.RunAsync(Spec(5), null, cts.Token);
        await _channel.StepSentAsync(r => r.Step == 2);

        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => job);

        Assert.Equal((0L, 0L, 1L), (runner.Completed, runner.Failed, runner.Cancelled));
        var record = Assert.Single(runner.Recent);
        Assert.Equal(("cancelled", 2), (record.State, record.CompletionTokens));
    }
}
