using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
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
/// What a ban does to a running job, through <see cref="JobRunner"/> with the real registry, router, spot checker and
/// ban board, a <see cref="FakeStepChannel"/> for the nodes and a fake clock. The node that will be banned answers
/// 900 + step, honest nodes 100 + step, so the tokens tell which node made them; the ban lands while the job runs
/// (as when another job's check catches the node). Unstreamed: the tokens it made are generated again. Streamed: the
/// job ends with <c>node_banned</c> — unless <c>--stream-verified-only</c> held them back.
/// </summary>
public sealed class BanRewindTests
{
    private const int Layers = 4, NewTokens = 6, BanAtStep = 3;
    private static readonly int[] Prompt = [1, 2, 3];
    private static readonly int[] Honest = [.. Enumerable.Range(100, NewTokens)];

    private readonly FakeTimeProvider _time = new();
    private readonly NodeRegistry _registry;
    private readonly FakeStepChannel _channel;
    private readonly BanBoard _bans;

    public BanRewindTests()
    {
        _registry = new NodeRegistry(new FailureDetectorOptions(), _time);
        _channel = new FakeStepChannel(_time);
        _bans = new BanBoard(_registry, _time, TimeSpan.FromHours(1));
    }

    private JobRunner Runner(VerificationOptions verification) =>
        new(new JobRunnerOptions { NumLayers = Layers, ContextLength = 64, Verification = verification }, _registry,
            new ShortestPathRouter(new RoutingOptions(), new PowerOfTwoChoicesPolicy(new Random(1))), _channel, null, _time,
            NullLogger.Instance, bans: _bans);

    private void Serve(int id, int start, int end) => _registry.Register(new NodeInfo
    {
        Id = id, Name = $"node-{id}", Endpoint = $"127.0.0.1:{9000 + id}", MemoryBudgetBytes = 1L << 30, LayerThroughput = 1000,
    }, new LayerRange(start, end));

    private static JobSpec Spec() => new(Prompt, new SamplingOptions { MaxNewTokens = NewTokens, Seed = 7 }, []);

    /// <summary>
    /// A step's answer as real nodes give it: one fingerprint per hop (all honest nodes agree: the same values), the
    /// token only from a route that ends on the last layer. <paramref name="liar"/> samples 900 + step.
    /// </summary>
    private TokenResult Answer(ForwardRequest r, int? liar)
    {
        _time.Advance(TimeSpan.FromMilliseconds(5));
        bool last = r.Route[^1].Layers.End == Layers;
        int token = !last ? -1 : (r.Route.Any(h => h.NodeId == liar) ? 900 : 100) + r.Step;
        return TokenFor(r, token) with
        {
            Fingerprints = [.. r.Route.Select((h, i) => new StageFingerprint
            {
                NodeId = h.NodeId, Input = i == 0 ? [] : [.. Enumerable.Repeat(1f, StageFingerprint.Width)],
                Output = [.. Enumerable.Range(1, StageFingerprint.Width).Select(v => (float)v)],
            })],
        };
    }

    /// <summary>One node serves every layer until step <see cref="BanAtStep"/>; then a second one joins and the first is banned.</summary>
    private void LiarThenBanned(Action? atBan = null)
    {
        Serve(1, 0, Layers);
        bool banned = false;
        _channel.Answer = r =>
        {
            if (r.Step == BanAtStep && !banned)
            {
                banned = true;
                Serve(2, 0, Layers);
                atBan?.Invoke();
                Assert.True(_bans.Ban(1, "caught by another job's check"));
            }
            return Answer(r, liar: 1);
        };
    }

    [Fact]
    public async Task Unstreamed_NodeBannedAfterItMadeTokens_ReturnsTheHonestTokensAndCountsTheRecomputedOnes()
    {
        LiarThenBanned();
        using var runner = Runner(new VerificationOptions());

        var result = await runner.RunAsync(Spec(), null, CancellationToken.None);

        Assert.Equal(Honest, result.TokenIds);
        Assert.Equal(BanAtStep, result.RecomputedTokens); // tokens 0..2 went through node 1 (step 3's answer, after the ban, was never accepted)
        var after = _channel.Steps.SkipWhile(s => s.Route[0].NodeId == 1).ToList();
        Assert.All(after, s => Assert.Equal(2, s.Route[0].NodeId));
        Assert.Equal((StepKind.Prefill, 0), (after[0].Kind, after[0].StartPosition)); // from the prompt again
        Assert.Equal(Prompt, TokenIds(after[0]));
        Assert.Equal(NewTokens, after.Count);
    }

    [Fact]
    public async Task Streamed_NodeBannedAfterItsTokensWereSent_EndsWithNodeBanned()
    {
        LiarThenBanned();
        using var runner = Runner(new VerificationOptions());
        var streamed = new List<int>();

        var e = await Assert.ThrowsAsync<JobFailedException>(() => runner.RunAsync(Spec(),
            d => { streamed.AddRange(d.TokenIds); return ValueTask.CompletedTask; }, CancellationToken.None));

        Assert.Equal(("node_banned", 502), (e.Code, e.HttpStatus));
        Assert.Contains("node 1 was banned", e.Message);
        Assert.Equal([900, 901, 902], streamed); // what went out before the ban; nothing after
        Assert.Equal(1L, runner.Failed);
    }

    [Fact]
    public async Task Streamed_OverHttp_AffectedTokensSent_EndsWithANodeBannedErrorEventAndCloses()
    {
        LiarThenBanned();
        using var runner = Runner(new VerificationOptions());
        var ctx = new DefaultHttpContext();
        var body = new MemoryStream();
        ctx.Response.Body = body;

        // Returns (the handler closes the response) instead of throwing; the job never gets as far as its result.
        await new CompletionStream(ctx, "tiny", DateTimeOffset.UnixEpoch, includeUsage: false, tokenizer: null)
            .RunAsync(runner, Spec(), _ => throw new InvalidOperationException("a banned job has no result"), CancellationToken.None);

        string sse = Encoding.UTF8.GetString(body.ToArray());
        var events = sse.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.All(events, e => Assert.StartsWith("data: {", e, StringComparison.Ordinal));
        Assert.DoesNotContain("[DONE]", sse, StringComparison.Ordinal);
        var json = events.Select(e => JsonNode.Parse(e["data: ".Length..])!).ToList();
        Assert.Equal([900, 901, 902], json.SkipLast(1).SelectMany(j => j["choices"]![0]!["token_ids"]!.AsArray().Select(t => (int)t!)));
        var error = json[^1]["error"]!;
        Assert.Equal("node_banned", (string?)error["code"]);
        Assert.Contains("node 1 was banned", (string)error["message"]!, StringComparison.Ordinal);
        Assert.Equal((200, "text/event-stream"), (ctx.Response.StatusCode, ctx.Response.ContentType));
    }

    [Fact]
    public async Task StreamVerifiedOnly_UncheckedHopBannedMidJob_HeldTokensAreRewoundAndOnlyHonestOnesAreSent()
    {
        // Two replicas of each half, all on probation. The second half's nodes have one passed check each, so a
        // session checks its first hop (fewest passes); the second hop runs unchecked and its tokens are held.
        Serve(1, 0, 2);
        Serve(2, 0, 2);
        Serve(3, 2, 4);
        Serve(4, 2, 4);
        _registry.RecordCheck(3, passed: true);
        _registry.RecordCheck(4, passed: true);
        int? liar = null;
        int sentAtBan = -1;
        var streamed = new List<int>();
        _channel.Answer = r =>
        {
            if (r.Route.Length == 2) liar ??= r.Route[1].NodeId;
            if (r.Route.Length == 2 && r.Step == BanAtStep && sentAtBan < 0)
            {
                sentAtBan = streamed.Count;
                Assert.True(_bans.Ban(liar!.Value, "caught by another job's check"));
            }
            return Answer(r, liar);
        };
        using var runner = Runner(new VerificationOptions { Rate = 0.001, StreamVerifiedOnly = true });

        var result = await runner.RunAsync(Spec(), d => { streamed.AddRange(d.TokenIds); return ValueTask.CompletedTask; }, CancellationToken.None);

        Assert.Equal(0, sentAtBan);          // the liar's tokens were held back…
        Assert.Equal(Honest, streamed);     // …so the stream carries only the honest ones, and no error
        Assert.Equal(Honest, result.TokenIds);
        Assert.Equal(BanAtStep, result.RecomputedTokens);
        // Every session was checked although the base rate is 0.001: its first hop was on probation.
        Assert.All(_channel.Steps.Where(s => s.Route.Length == 2), s =>
            Assert.Contains(_channel.Sent, m => m.Message is ForwardRequest c && c.Route.Length == 1 && c.Step == s.Step && c.SessionId != s.SessionId));
    }

    [Fact]
    public async Task StreamVerifiedOnly_CheckedProbationHop_SendsEachTokenOnceItsCheckPassed()
    {
        Serve(1, 0, Layers);
        Serve(2, 0, Layers);
        var streamed = new List<int>();
        var sentBeforeStep = new Dictionary<int, int>();
        _channel.Answer = r =>
        {
            sentBeforeStep.TryAdd(r.Step, streamed.Count); // the step's first send (its shadow copy goes out first)
            return Answer(r, liar: null);
        };
        using var runner = Runner(new VerificationOptions { Rate = 0.001, StreamVerifiedOnly = true });

        var result = await runner.RunAsync(Spec(), d => { streamed.AddRange(d.TokenIds); return ValueTask.CompletedTask; }, CancellationToken.None);

        Assert.Equal(Honest, streamed);
        Assert.Equal(0, result.RecomputedTokens);
        // Each token went out as soon as its step's check passed, before the next step was sent — not at the end.
        Assert.Equal(Enumerable.Range(0, NewTokens).ToDictionary(s => s, s => s), sentBeforeStep);
        Assert.All(_registry.Snapshot(), n => Assert.Equal(NewTokens, n.ChecksPassed)); // the route's node and its shadow
    }
}
