using Swarm.Coordinator.Api;
using Xunit;

namespace Swarm.Tests.Coordinator;

/// <summary><c>logprobs</c>, <c>echo</c> and the <c>swarm.hidden_states</c> extension as the request parser takes them.</summary>
public class CompletionReadoutParameterTests
{
    private static readonly CompletionValidationContext Ctx = new()
    {
        ModelName = "m", ContextLength = 64, VocabSize = 1000, NumLayers = 12, HiddenSize = 768,
    };

    private static CompletionParseResult Parse(string json) => CompletionRequestParser.Parse(json, Ctx);

    private static CompletionRequest Valid(string json)
    {
        var r = Parse(json);
        Assert.True(r.IsValid, string.Join("; ", r.Errors));
        return r.Request!;
    }

    private static ValidationError Invalid(string json) => Assert.Single(Parse(json).Errors);

    [Fact]
    public void LogprobsAndEcho_Accepted_WithMaxTokensZeroOrOne_AsEvaluationHarnessesSendThem()
    {
        var r = Valid("""{"prompt":[1,2,3],"max_tokens":0,"echo":true,"logprobs":5,"temperature":0}""");
        Assert.Equal((5, true, 0), (r.Logprobs, r.Echo, r.MaxTokens));
        Assert.Equal((0, false), (Valid("""{"prompt":[1],"logprobs":0,"max_tokens":1}""").Logprobs, Valid("""{"prompt":[1],"echo":false}""").Echo));
        Assert.Null(Valid("""{"prompt":[1],"logprobs":null}""").Logprobs);
    }

    [Theory]
    [InlineData("""{"prompt":[1],"logprobs":6}""", "logprobs", "invalid_value")]
    [InlineData("""{"prompt":[1],"logprobs":-1}""", "logprobs", "invalid_value")]
    [InlineData("""{"prompt":[1],"logprobs":true}""", "logprobs", "invalid_type")]
    [InlineData("""{"prompt":[1],"echo":1}""", "echo", "invalid_type")]
    [InlineData("""{"prompt":[1],"max_tokens":0}""", "max_tokens", "invalid_value")]
    public void OutOfRange_Is400NamingTheField(string json, string field, string code)
    {
        var e = Invalid(json);
        Assert.Equal((field, code), (e.Field, e.Code));
    }

    [Fact]
    public void HiddenStates_LayersSortedAllPositionsByDefault_LastOnRequest_MaxTokensZeroAllowed()
    {
        var r = Valid("""{"prompt":[1,2],"max_tokens":0,"swarm":{"hidden_states":{"layers":[11,0,5]}}}""");
        Assert.Equal([0, 5, 11], r.HiddenStates!.Layers);
        Assert.True(r.HiddenStates.AllPositions);
        Assert.False(Valid("""{"prompt":[1],"swarm":{"hidden_states":{"layers":[3],"positions":"last"}}}""").HiddenStates!.AllPositions);
        Assert.Null(Valid("""{"prompt":[1],"swarm":{}}""").HiddenStates);
    }

    [Theory]
    [InlineData("""{"layers":[12]}""", "swarm.hidden_states.layers", "layer 12 does not exist: the model's layers are 0 … 11")]
    [InlineData("""{"layers":[-1]}""", "swarm.hidden_states.layers", "layer -1 does not exist")]
    [InlineData("""{"layers":[2,2]}""", "swarm.hidden_states.layers", "named twice")]
    [InlineData("""{"layers":[]}""", "swarm.hidden_states.layers", "non-empty")]
    [InlineData("""{"layers":["1"]}""", "swarm.hidden_states.layers", "integer layer indices")]
    [InlineData("""{}""", "swarm.hidden_states.layers", "is required")]
    [InlineData("""{"layers":[1],"positions":"middle"}""", "swarm.hidden_states.positions", "\"all\" or \"last\"")]
    [InlineData("""{"layers":[1],"rows":3}""", "swarm.hidden_states.rows", "not known")]
    public void InvalidHiddenStates_Is400NamingTheProblem(string hiddenStates, string field, string message)
    {
        var e = Invalid("""{"prompt":[1],"swarm":{"hidden_states":""" + hiddenStates + "}}");
        Assert.Equal(field, e.Field);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void UnknownSwarmExtension_AndTooManyBytes_Are400()
    {
        Assert.Equal(("swarm.trace", "unsupported_parameter"), (Invalid("""{"prompt":[1],"swarm":{"trace":true}}""") is var e ? (e.Field, e.Code) : default));
        string prompt = string.Join(",", Enumerable.Range(1, 63));
        var big = CompletionRequestParser.Parse("""{"prompt":[""" + prompt + """],"max_tokens":1,"swarm":{"hidden_states":{"layers":[0,1]}}}""",
            Ctx with { HiddenSize = 1 << 17 });
        Assert.Contains("more than the limit", Assert.Single(big.Errors).Message);
        Assert.Contains("not available", Assert.Single(CompletionRequestParser.Parse("""{"prompt":[1],"swarm":{"hidden_states":{"layers":[0]}}}""",
            Ctx with { NumLayers = 0 }).Errors).Message);
    }
}
