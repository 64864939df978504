using System.Text;
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
/// Logprobs, echo and hidden states through <see cref="JobRunner"/> with a <see cref="FakeStepChannel"/> whose last
/// stage samples token 100 + step with logprob −(step + 1)/8: what the steps ask the route for, and that the shown
/// tokens keep the stop contract — their texts concatenated are the text, in every delta and in the result.
/// </summary>
public sealed class JobLogprobsTests
{
    private readonly FakeTimeProvider _time = new();
    private readonly NodeRegistry _registry;
    private readonly FakeStepChannel _channel;

    public JobLogprobsTests()
    {
        _registry = new NodeRegistry(new FailureDetectorOptions(), _time);
        _channel = new FakeStepChannel(_time);
        _registry.Register(new NodeInfo
        {
            Id = 1, Name = "node-1", Endpoint = "127.0.0.1:9001", MemoryBudgetBytes = 1L << 30, LayerThroughput = 1000,
        }, new LayerRange(0, 4));
        _channel.Answer = Answer;
    }

    private static TokenLogprobs Lp(float v) => new() { Logprob = v, TopIds = [7], TopLogprobs = [-0.01f] };

    /// <summary>The last stage: token 100 + step, its logprob, the scored prompt tokens' (−id/100), the asked layers.</summary>
    private static TokenResult Answer(ForwardRequest r) => TokenFor(r, 100 + r.Step) with
    {
        Logprobs = r.Logprobs is null ? null : Lp(-(r.Step + 1) / 8f),
        InputLogprobs = [.. (r.Logprobs?.ScoredTokenIds ?? []).Select(id => Lp(-id / 100f))],
        HiddenStates = [.. (r.HiddenStates?.Layers ?? []).Select(l => new LayerHiddenStates
        {
            Layer = l, Data = new WireTensor { DType = WireDType.F32, Shape = [1, 1], Data = BitConverter.GetBytes((float)l) },
        })],
    };

    private JobRunner Runner(ITextTokenizer? tokenizer) =>
        new(new JobRunnerOptions { NumLayers = 4, ContextLength = 64 }, _registry,
            new ShortestPathRouter(new RoutingOptions(), new PowerOfTwoChoicesPolicy(new Random(1))), _channel, tokenizer, _time, NullLogger.Instance);

    private static JobSpec Spec(int maxNewTokens, params string[] stops) =>
        new([1, 2, 3], new SamplingOptions { MaxNewTokens = maxNewTokens, Seed = 7 }, stops) { Logprobs = 1 };

    private static async Task<(JobResult Result, List<JobDelta> Deltas)> StreamAsync(JobRunner runner, JobSpec spec)
    {
        var deltas = new List<JobDelta>();
        var result = await runner.RunAsync(spec, d => { deltas.Add(d); return ValueTask.CompletedTask; }, default);
        return (result, deltas);
    }

    /// <summary>Every delta shows exactly its tokens' text; the deltas together show exactly the result's tokens and text.</summary>
    private static void AssertShownTokensMatchText((JobResult Result, List<JobDelta> Deltas) s)
    {
        foreach (var d in s.Deltas) Assert.Equal(d.Text, string.Concat(d.Logprobs!.Select(t => t.Text)));
        Assert.Equal(s.Result.Text, string.Concat(s.Result.Logprobs!.Select(t => t.Text)));
        Assert.Equal(s.Result.Logprobs, s.Deltas.Where(d => !d.IsEcho).SelectMany(d => d.Logprobs!));
        Assert.Equal(s.Result.Text, string.Concat(s.Deltas.Select(d => d.Text)));
        Assert.Equal(s.Result.TokenIds, s.Deltas.SelectMany(d => d.TokenIds));
    }

    [Fact]
    public async Task StopSequenceInsideAToken_ThatTokenShowsTheTextBeforeIt_LaterTokensAreNotShown()
    {
        using var runner = Runner(MapTokenizer.OfText("er", "n d", "Q", "x"));

        var s = await StreamAsync(runner, Spec(10, " dQ"));

        Assert.Equal(("stop", "ern"), (s.Result.FinishReason, s.Result.Text));
        Assert.Equal([100, 101, 102], s.Result.TokenIds);   // every generated token, the stop's too
        Assert.Equal([(100, "er", -0.125f), (101, "n", -0.25f)], s.Result.Logprobs!.Select(t => (t.TokenId, t.Text, t.Logprobs!.Logprob)));
        AssertShownTokensMatchText(s);
        // " d" could begin the stop sequence: token 101 is held back with it, so its delta shows nothing.
        Assert.Equal(["er", "", "n"], s.Deltas.Select(d => d.Text));
    }

    [Fact]
    public async Task HeldBackTextThatIsNotAStop_IsShownWithItsTokensOnceItCannotBe()
    {
        using var runner = Runner(MapTokenizer.OfText("a", " d", "x", "y"));

        var s = await StreamAsync(runner, Spec(4, " dQ"));

        Assert.Equal(("length", "a dxy"), (s.Result.FinishReason, s.Result.Text));
        Assert.Equal(["a", "", " dx", "y"], s.Deltas.Select(d => d.Text));
        Assert.Equal([1, 0, 2, 1], s.Deltas.Select(d => d.Logprobs!.Count));
        AssertShownTokensMatchText(s);
    }

    [Fact]
    public async Task CharacterCutOffByTheTokenLimit_ItsTokenShowsTheReplacementCharacter()
    {
        byte[] euro = Encoding.UTF8.GetBytes("€");
        using var runner = Runner(new MapTokenizer("a"u8.ToArray(), euro[..2], euro[2..]));

        var s = await StreamAsync(runner, Spec(2));

        Assert.Equal("a\uFFFD", s.Result.Text);
        Assert.Equal([(100, "a"), (101, "\uFFFD")], s.Result.Logprobs!.Select(t => (t.TokenId, t.Text)));
        AssertShownTokensMatchText(s);
    }

    [Fact]
    public async Task StopToken_IsNeitherShownNorScored_ItsPredecessorsAre()
    {
        using var runner = Runner(MapTokenizer.Letters());

        var s = await StreamAsync(runner, new JobSpec([1, 2, 3], new SamplingOptions { MaxNewTokens = 5, Seed = 7, StopTokenIds = [102] }, []) { Logprobs = 0 });

        Assert.Equal(("stop", "ab"), (s.Result.FinishReason, s.Result.Text));
        Assert.Equal([100, 101], s.Result.Logprobs!.Select(t => t.TokenId));
        AssertShownTokensMatchText(s);
    }

    [Fact]
    public async Task EchoWithLogprobsAndNoNewTokens_RunsThePrefillOnly_ScoringEveryPromptTokenButTheFirst()
    {
        using var runner = Runner(MapTokenizer.Letters());

        var s = await StreamAsync(runner, new JobSpec([100, 101, 102], new SamplingOptions { MaxNewTokens = 0, Seed = 7 }, []) { Logprobs = 2, Echo = true });

        var step = Assert.Single(_channel.Steps);
        Assert.Equal((StepKind.Prefill, 2), (step.Kind, step.Logprobs!.Top));
        Assert.Equal([101, 102], step.Logprobs.ScoredTokenIds);
        Assert.Empty(s.Result.TokenIds);
        Assert.Equal("", s.Result.Text);
        Assert.Equal([("a", null), ("b", -1.01f), ("c", -1.02f)], s.Result.Echo!.Select(t => (t.Text, t.Logprobs?.Logprob)));
        var echo = Assert.Single(s.Deltas);   // the prompt, then nothing: no token was generated
        Assert.True(echo.IsEcho);
        Assert.Equal("abc", echo.Text);
        Assert.Empty(s.Result.Logprobs!);
    }

    [Fact]
    public async Task EchoWithoutLogprobs_ShowsThePromptFirst_AndScoresNothing()
    {
        using var runner = Runner(MapTokenizer.Letters());

        var s = await StreamAsync(runner, new JobSpec([100, 101], new SamplingOptions { MaxNewTokens = 2, Seed = 7 }, []) { Echo = true });

        Assert.All(_channel.Steps, r => Assert.Null(r.Logprobs));
        Assert.Equal(["ab", "a", "b"], s.Deltas.Select(d => d.Text));
        Assert.Null(s.Result.Logprobs);
        Assert.Equal("ab", s.Result.Text);
    }

    [Fact]
    public async Task HiddenStates_AreAskedOfThePrefillOnly_AndReturnedInLayerOrder()
    {
        using var runner = Runner(null);

        var r = await runner.RunAsync(new JobSpec([1, 2, 3], new SamplingOptions { MaxNewTokens = 3, Seed = 7 }, [])
        {
            HiddenStates = new HiddenStatesRequest { Layers = [0, 3], AllPositions = true },
        }, null, default);

        Assert.Equal([0, 3], _channel.Steps[0].HiddenStates!.Layers);
        Assert.All(_channel.Steps.Skip(1), step => Assert.Null(step.HiddenStates));
        Assert.Equal([0, 3], r.HiddenStates.Select(h => h.Layer));
        Assert.Equal(3, r.TokenIds.Count);
    }

    [Fact]
    public async Task ARouteThatReturnsFewerLayersThanAsked_FailsTheJob()
    {
        using var runner = Runner(null);
        _channel.Answer = r => Answer(r) with { HiddenStates = [] };

        var e = await Assert.ThrowsAsync<JobFailedException>(() => runner.RunAsync(new JobSpec([1, 2], new SamplingOptions { MaxNewTokens = 1, Seed = 7 }, [])
        {
            HiddenStates = new HiddenStatesRequest { Layers = [1], AllPositions = false },
        }, null, default));

        Assert.Equal((500, "hidden_states_missing"), (e.HttpStatus, e.Code));
    }
}
