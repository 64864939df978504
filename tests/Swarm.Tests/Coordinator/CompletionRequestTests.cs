using System.Text.Json;
using Swarm.Coordinator.Api;
using Xunit;

namespace Swarm.Tests.Coordinator;

public class CompletionRequestTests
{
    private static readonly CompletionValidationContext Ctx = new()
    {
        ModelName = "pythia-160m", ContextLength = 64, VocabSize = 1000,
        CountTokens = s => s.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length,
    };

    private static CompletionRequest Valid(string json)
    {
        var r = CompletionRequestParser.Parse(json, Ctx);
        Assert.True(r.IsValid, string.Join("; ", r.Errors));
        Assert.Empty(r.Errors);
        return r.Request!;
    }

    private static IReadOnlyList<ValidationError> Invalid(string json) => Invalid(System.Text.Encoding.UTF8.GetBytes(json));

    private static IReadOnlyList<ValidationError> Invalid(byte[] json)
    {
        var r = CompletionRequestParser.Parse(json, Ctx);
        Assert.False(r.IsValid);
        Assert.Null(r.Request);
        Assert.NotEmpty(r.Errors);
        return r.Errors;
    }

    [Fact]
    public void Parse_TextPrompt_Defaults()
    {
        var r = Valid("""{"model":"pythia-160m","prompt":"hello there world"}""");
        Assert.Equal("hello there world", r.PromptText);
        Assert.Null(r.PromptTokenIds);
        Assert.Equal(3, r.PromptTokenCount);
        Assert.Equal(16, r.MaxTokens);
        Assert.Equal(1.0, r.Temperature);
        Assert.Equal(1.0, r.TopP);
        Assert.Equal(0, r.TopK);
        Assert.Null(r.Seed);
        Assert.Empty(r.Stop);
        Assert.Empty(r.StopTokenIds);
        Assert.False(r.Stream);
    }

    [Fact]
    public void Parse_AllFields()
    {
        var r = Valid("""
            {"model":"pythia-160m","prompt":[1,2,3],"max_tokens":20,"temperature":0,"top_p":0.9,"top_k":40,
             "seed":-7,"stop":["\n\n","END"],"stop_token_ids":[0,5],"stream":true,"user":"ignored","n":1,"echo":false}
            """);
        Assert.Equal([1, 2, 3], r.PromptTokenIds);
        Assert.Equal(3, r.PromptTokenCount);
        Assert.Equal(20, r.MaxTokens);
        Assert.Equal(0, r.Temperature);
        Assert.Equal(0.9, r.TopP);
        Assert.Equal(40, r.TopK);
        Assert.Equal(-7, r.Seed);
        Assert.Equal(["\n\n", "END"], r.Stop);
        Assert.Equal([0, 5], r.StopTokenIds);
        Assert.True(r.Stream);
    }

    [Fact]
    public void Parse_AlternativePromptAndStopForms()
    {
        Assert.Equal("one two", Valid("""{"prompt":["one two"]}""").PromptText);
        Assert.Equal([4, 5], Valid("""{"prompt":[[4,5]]}""").PromptTokenIds);
        Assert.Equal(["x"], Valid("""{"prompt":"a","stop":"x"}""").Stop);
        // Missing model and explicit nulls mean defaults.
        var r = Valid("""{"prompt":"a","model":null,"temperature":null,"stop":null,"seed":null}""");
        Assert.Equal("pythia-160m", r.Model);
        Assert.Equal(1.0, r.Temperature);
    }

    [Fact]
    public void Parse_MissingPrompt()
    {
        var e = Assert.Single(Invalid("""{"model":"pythia-160m"}"""));
        Assert.Equal(("prompt", "missing_required_parameter"), (e.Field, e.Code));
    }

    [Theory]
    [InlineData("0")]
    [InlineData("-3")]
    [InlineData("65")]
    [InlineData("1.5")]
    [InlineData("\"16\"")]
    public void Parse_MaxTokensOutOfRangeOrWrongType(string value)
    {
        var e = Assert.Single(Invalid($$"""{"prompt":"a","max_tokens":{{value}}}"""));
        Assert.Equal("max_tokens", e.Field);
    }

    [Fact]
    public void Parse_MaxTokensAtContextWithShortPrompt_ExceedsTogether()
    {
        Assert.Equal(63, Valid("""{"prompt":"a","max_tokens":63}""").MaxTokens);
        var e = Assert.Single(Invalid("""{"prompt":"a b","max_tokens":63}"""));
        Assert.Equal(("max_tokens", "context_length_exceeded"), (e.Field, e.Code));
        Assert.Contains("max_tokens ≤ 62", e.Message);
    }

    [Fact]
    public void Parse_UnknownModel()
    {
        var e = Assert.Single(Invalid("""{"model":"gpt-4","prompt":"a"}"""));
        Assert.Equal(("model", "model_not_found"), (e.Field, e.Code));
        Assert.Contains("pythia-160m", e.Message);
    }

    [Fact]
    public void Parse_PromptLongerThanContext_IdsAndText()
    {
        string ids = string.Join(",", Enumerable.Repeat(1, 64));
        var e = Assert.Single(Invalid($$"""{"prompt":[{{ids}}]}"""));
        Assert.Equal(("prompt", "context_length_exceeded"), (e.Field, e.Code));
        Assert.Contains("64 tokens", e.Message);
        string words = string.Join(" ", Enumerable.Repeat("w", 70));
        Assert.Equal("prompt", Assert.Single(Invalid($$"""{"prompt":"{{words}}"}""")).Field);
    }

    [Fact]
    public void Parse_TextPromptWithoutTokenCounter_NotLengthChecked()
    {
        var ctx = Ctx with { CountTokens = null };
        var r = CompletionRequestParser.Parse("""{"prompt":"a b c"}""", ctx);
        Assert.True(r.IsValid);
        Assert.Null(r.Request!.PromptTokenCount);
    }

    [Theory]
    [InlineData("{\"prompt\":\"a\"")]
    [InlineData("")]
    [InlineData("{prompt:1}")]
    [InlineData("{\"prompt\":\"a\"} trailing")]
    public void Parse_BadJson(string body)
    {
        var e = Assert.Single(Invalid(body));
        Assert.Equal(("body", "invalid_json"), (e.Field, e.Code));
    }

    [Theory]
    [InlineData("[1,2]")]
    [InlineData("\"prompt\"")]
    [InlineData("null")]
    public void Parse_NotAnObject(string body) => Assert.Equal("body", Assert.Single(Invalid(body)).Field);

    [Fact]
    public void Parse_WrongTypes_AllReportedAtOnce()
    {
        var errors = Invalid("""
            {"model":5,"prompt":{"text":"a"},"max_tokens":"many","temperature":"hot","top_p":true,"top_k":1.5,
             "seed":"x","stop":[1],"stop_token_ids":"0","stream":"yes"}
            """);
        Assert.Equal(
            ["model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stop_token_ids", "stream"],
            errors.Select(e => e.Field));
        Assert.All(errors, e => Assert.Equal("invalid_type", e.Code));
    }

    [Fact]
    public void Parse_OutOfRangeValues_AllReportedAtOnce()
    {
        var errors = Invalid("""
            {"prompt":[1,1000],"temperature":2.5,"top_p":0,"top_k":-1,"stop":[""],"stop_token_ids":[-1],"n":2,"logprobs":6}
            """);
        Assert.Equal(["prompt", "logprobs", "temperature", "top_p", "top_k", "stop", "stop_token_ids", "n"], errors.Select(e => e.Field));
        Assert.Contains("outside the vocabulary", errors[0].Message);
    }

    [Fact]
    public void Parse_EmptyAndBatchedPrompts()
    {
        Assert.Equal("prompt", Assert.Single(Invalid("""{"prompt":""}""")).Field);
        Assert.Equal("prompt", Assert.Single(Invalid("""{"prompt":[]}""")).Field);
        Assert.Equal("unsupported_parameter", Assert.Single(Invalid("""{"prompt":["a","b"]}""")).Code);
        Assert.Equal("invalid_type", Assert.Single(Invalid("""{"prompt":[1,"b"]}""")).Code);
        Assert.Equal("invalid_type", Assert.Single(Invalid("""{"prompt":[1.5]}""")).Code);
    }

    [Fact]
    public void Parse_TooManyStopSequences()
    {
        string stops = string.Join(",", Enumerable.Range(0, 17).Select(i => $"\"s{i}\""));
        Assert.Equal("stop", Assert.Single(Invalid($$"""{"prompt":"a","stop":[{{stops}}]}""")).Field);
    }

    [Theory]
    [InlineData(new byte[] { 0xFF, 0xFE })]                                                    // not UTF-8 at all
    [InlineData(new byte[] { (byte)'{', (byte)'"', (byte)'p', (byte)'"', (byte)':', (byte)'"', 0xC3, (byte)'"', (byte)'}' })] // truncated sequence in a string
    [InlineData(new byte[] { (byte)'{', (byte)'"', 0xED, 0xA0, 0x80, (byte)'"', (byte)':', (byte)'1', (byte)'}' })]         // UTF-16 surrogate in a key
    public void Parse_InvalidUtf8_IsOneBodyError_NotAnException(byte[] body)
    {
        var r = CompletionRequestParser.Parse(body, Ctx);
        var e = Assert.Single(r.Errors);
        Assert.Equal("body", e.Field);
        Assert.Equal("invalid_encoding", e.Code);
        Assert.Contains("UTF-8", e.Message);
    }

    [Fact]
    public void Parse_InvalidUtf8InsideAValidDocument_NamesTheByteOffset()
    {
        byte[] body = [.. "{\"prompt\":\"ab"u8, 0xC3, 0x28, .. "\"}"u8];
        var e = Assert.Single(Invalid(body));
        Assert.Contains("byte 13", e.Message);
    }

    [Theory]
    [InlineData("""{"prompt":"a\ud800b"}""", "prompt")]
    [InlineData("""{"prompt":"ok","stop":["\udc00"]}""", "stop")]
    [InlineData("""{"prompt":"ok","model":"\ud800"}""", "model")]
    public void Parse_UnpairedSurrogateEscape_Is400NotAnException(string json, string field)
    {
        var e = Assert.Single(Invalid(json));
        Assert.Equal(field, e.Field);
    }

    [Theory]
    [InlineData("presence_penalty", "0.5")]
    [InlineData("frequency_penalty", "-1")]
    [InlineData("suffix", "\"world\"")]
    [InlineData("best_of", "3")]
    [InlineData("logit_bias", "{\"50256\":-100}")]
    public void Parse_UnsupportedParameter_Is400NamingIt(string field, string value)
    {
        var e = Assert.Single(Invalid($$"""{"prompt":[1,2],"{{field}}":{{value}}}"""));
        Assert.Equal(field, e.Field);
        Assert.Equal("unsupported_parameter", e.Code);
        Assert.Contains("not supported yet", e.Message);
    }

    [Fact]
    public void Parse_StreamOptionsIncludeUsage_IsReadOnlyWithStream()
    {
        Assert.True(Valid("""{"prompt":[1,2],"stream":true,"stream_options":{"include_usage":true}}""").IncludeUsage);
        Assert.False(Valid("""{"prompt":[1,2],"stream":true,"stream_options":{}}""").IncludeUsage);
        Assert.False(Valid("""{"prompt":[1,2],"stream":true}""").IncludeUsage);
        var notStreamed = Assert.Single(Invalid("""{"prompt":[1,2],"stream_options":{"include_usage":true}}"""));
        Assert.Equal(("stream_options", "invalid_value"), (notStreamed.Field, notStreamed.Code));
        var wrongType = Assert.Single(Invalid("""{"prompt":[1,2],"stream":true,"stream_options":{"include_usage":1}}"""));
        Assert.Equal(("stream_options.include_usage", "invalid_type"), (wrongType.Field, wrongType.Code));
        Assert.Equal("invalid_type", Assert.Single(Invalid("""{"prompt":[1,2],"stream_options":true}""")).Code);
    }

    [Fact]
    public void Parse_UnsupportedParameters_AtTheirNoOpDefaults_AreAccepted()
    {
        Valid("""
            {"prompt":[1,2],"logprobs":null,"presence_penalty":0,"frequency_penalty":0.0,"suffix":null,"best_of":1,"n":1,
             "echo":false,"logit_bias":{},"stream_options":{"include_usage":false},"stream":true}
            """);
        Valid("""{"prompt":[1,2],"suffix":"","stream_options":null,"logit_bias":null}""");
    }

    [Fact]
    public void Parse_UnsupportedParameters_WrongTypes_AreInvalidType()
    {
        var errors = Invalid("""{"prompt":[1,2],"presence_penalty":"high","best_of":1.5,"logprobs":true,"suffix":3}""");
        Assert.Equal(["best_of", "logprobs", "presence_penalty", "suffix"], errors.Select(e => e.Field).Order(StringComparer.Ordinal));
        Assert.All(errors, e => Assert.Equal("invalid_type", e.Code));
    }

    [Fact]
    public void ErrorBody_HasOpenAiShape_WithAllErrors()
    {
        var errors = Invalid("""{"max_tokens":0}""");
        var json = CompletionWire.ToJson(OpenAiErrorResponse.InvalidRequest(errors));
        using var doc = JsonDocument.Parse(json);
        var err = doc.RootElement.GetProperty("error");
        Assert.Equal("invalid_request_error", err.GetProperty("type").GetString());
        Assert.Equal("prompt", err.GetProperty("param").GetString());
        Assert.Equal("missing_required_parameter", err.GetProperty("code").GetString());
        string message = err.GetProperty("message").GetString()!;
        Assert.Contains("prompt: is required", message);
        Assert.Contains("max_tokens: must be between 1 and 64", message);
        Assert.Equal(2, err.GetProperty("errors").GetArrayLength());
    }

    [Fact]
    public void ErrorBody_BadJson_ParamIsNull()
    {
        var json = CompletionWire.ToJson(OpenAiErrorResponse.InvalidRequest(Invalid("{")));
        using var doc = JsonDocument.Parse(json);
        Assert.Equal(JsonValueKind.Null, doc.RootElement.GetProperty("error").GetProperty("param").ValueKind);
    }

    [Fact]
    public void ErrorBody_ServiceUnavailable_NoErrorsList()
    {
        var json = CompletionWire.ToJson(OpenAiErrorResponse.ServiceUnavailable("layers 4-5 are not served by any node"));
        Assert.Equal(
            """{"error":{"message":"layers 4-5 are not served by any node","type":"service_unavailable_error","param":null,"code":"layers_uncovered"}}""",
            json);
    }

    [Fact]
    public void Response_Json_HasOpenAiFieldsAndTokenIds()
    {
        var created = DateTimeOffset.FromUnixTimeSeconds(1_700_000_000);
        var resp = CompletionResponse.Create("cmpl-1", "pythia-160m", created, " world", [995, 13], FinishReasons.Length, 3);
        Assert.Equal(
            """{"id":"cmpl-1","object":"text_completion","created":1700000000,"model":"pythia-160m","choices":[{"text":" world","index":0,"logprobs":null,"finish_reason":"length","token_ids":[995,13]}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}""",
            CompletionWire.ToJson(resp));
    }

    [Fact]
    public void Chunk_SseFraming_FinishOnlyOnLast()
    {
        var created = DateTimeOffset.FromUnixTimeSeconds(5);
        var mid = CompletionChunk.Create("cmpl-1", "m", created, "he", [1]);
        Assert.Equal(
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":5,\"model\":\"m\",\"choices\":[{\"text\":\"he\",\"index\":0,\"logprobs\":null,\"finish_reason\":null,\"token_ids\":[1]}]}\n\n",
            CompletionWire.ToEvent(mid));
        var last = CompletionChunk.Create("cmpl-1", "m", created, "", [], FinishReasons.Stop, new CompletionUsage(2, 1, 3));
        using var doc = JsonDocument.Parse(CompletionWire.ToJson(last));
        Assert.Equal("stop", doc.RootElement.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.Equal(3, doc.RootElement.GetProperty("usage").GetProperty("total_tokens").GetInt32());
        Assert.Equal("data: [DONE]\n\n", CompletionWire.DoneEvent);
    }
}
