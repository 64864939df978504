using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Swarm.Tests.Telemetry;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Integration;

/// <summary>
/// The HTTP API's contract against a live swarm: every error — 400, 404, 405, 408 — in OpenAI's error shape,
/// <c>/v1/models/{id}</c>, chat completions refused as a base model's, and HTTP metrics on <c>/metrics</c>.
/// </summary>
[Collection("processes")]
public class HttpContractTests(CodeSwarmFixture swarm, ITestOutputHelper output) : IClassFixture<CodeSwarmFixture>
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromMinutes(2) };

    private async Task<(HttpResponseMessage Response, JsonNode Error)> SendAsync(HttpMethod method, string path, byte[]? body = null)
    {
        using var request = new HttpRequestMessage(method, swarm.Url + path);
        if (body is not null)
        {
            request.Content = new ByteArrayContent(body);
            request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        }
        var response = await Http.SendAsync(request);
        string text = await response.Content.ReadAsStringAsync();
        output.WriteLine($"{method} {path} → {(int)response.StatusCode} {text}");
        return (response, AssertOpenAiError(response.Content.Headers.ContentType?.MediaType, text));
    }

    /// <summary>Asserts OpenAI's error shape, <c>{"error":{"message","type","param","code"}}</c>, and returns the inner object.</summary>
    private static JsonNode AssertOpenAiError(string? contentType, string body)
    {
        Assert.Equal("application/json", contentType);
        var error = JsonNode.Parse(body)?["error"];
        Assert.NotNull(error);
        Assert.False(string.IsNullOrWhiteSpace((string?)error["message"]), body);
        Assert.False(string.IsNullOrWhiteSpace((string?)error["type"]), body);
        var fields = error.AsObject().Select(p => p.Key).ToHashSet();
        Assert.Contains("param", fields);
        Assert.Contains("code", fields);
        return error;
    }

    [Fact]
    public async Task OfficialOpenAiJsClient_ListsRetrievesCompletesStreamsAndSeesErrors()
    {
        var checks = await OpenAiClientScript.RunAsync(swarm.Url, CodeSwarmFixture.ModelName, output);
        Assert.All(checks.Values, c => Assert.True((bool)c["ok"]!, c.ToJsonString()));
        Assert.Equal(
            ["models.list", "models.retrieve", "completions.token_ids", "completions.text", "completions.stream_stop",
             "completions.stream_usage", "completions.logprobs_echo", "completions.stream_logprobs", "error.400", "error.404", "error.chat",
             "error.embeddings"],
            checks.Keys);

        Assert.Equal([CodeSwarmFixture.ModelName], checks["models.list"]["ids"]!.AsArray().Select(i => (string)i!));
        Assert.Equal("model", (string?)checks["models.retrieve"]["object"]);
        Assert.Equal(CodeSwarmFixture.ModelName, (string?)checks["models.retrieve"]["id"]);

        // What the client parsed equals what the API sent to a plain HTTP request with the same body.
        var ids = checks["completions.token_ids"];
        var (status, direct) = await SwarmClient.PostAsync(swarm.Url, """{"prompt":[1,2,3,4],"max_tokens":6,"temperature":0}""");
        Assert.Equal(200, status);
        Assert.Equal((string?)direct!["choices"]![0]!["text"], (string?)ids["text"]);
        Assert.Equal(direct["choices"]![0]!["token_ids"]!.ToJsonString(), ids["token_ids"]!.ToJsonString());
        Assert.Equal("length", (string?)ids["finish_reason"]);
        Assert.Equal(6, (int)ids["usage"]!["completion_tokens"]!);
        Assert.Equal(4, (int)ids["usage"]!["prompt_tokens"]!);
        Assert.StartsWith("cmpl-", (string?)ids["id"]);

        var text = checks["completions.text"];
        Assert.False(string.IsNullOrEmpty((string?)text["text"]));
        Assert.Equal(16, (int)text["usage"]!["completion_tokens"]!);

        // Streaming with a stop sequence: SSE parsed by the client, ended by the stop, the stop itself never in the text.
        var stream = checks["completions.stream_stop"];
        string unstreamed = (string)stream["unstreamed_text"]!;
        Assert.Equal("stop", (string?)stream["unstreamed_finish_reason"]);
        Assert.Equal("stop", (string?)stream["finish_reason"]);
        Assert.DoesNotContain("\n", unstreamed);
        Assert.True((int)stream["chunks"]! >= 2, stream.ToJsonString());
        Assert.Equal(unstreamed, (string)stream["text"]!);

        // stream_options.include_usage: the stream ends with a chunk without choices whose usage the client reads,
        // carrying the swarm object; the text is what the same request unstreamed returns.
        var usage = checks["completions.stream_usage"];
        var (plainStatus, plain) = await SwarmClient.PostAsync(swarm.Url,
            """{"prompt":"def add(a, b):\n","max_tokens":8,"temperature":0}""");
        Assert.Equal(200, plainStatus);
        Assert.Equal((string?)plain!["choices"]![0]!["text"], (string?)usage["text"]);
        Assert.Equal(plain["usage"]!.ToJsonString(), usage["usage"]!.ToJsonString());
        Assert.Equal(8, (int)usage["usage"]!["completion_tokens"]!);
        Assert.Equal(0, (int)usage["last_choices"]!);
        Assert.Equal(2, (int)usage["last_swarm_stages"]!);

        AssertLogprobChecks(checks["completions.logprobs_echo"], checks["completions.stream_logprobs"]);

        Assert.Equal(400, (int)checks["error.400"]["status"]!);
        Assert.Equal("max_tokens", (string?)checks["error.400"]["param"]);
        Assert.Equal("invalid_request_error", (string?)checks["error.400"]["type"]);
        Assert.Equal(404, (int)checks["error.404"]["status"]!);
        Assert.Equal("model_not_found", (string?)checks["error.404"]["code"]);
        Assert.Equal(400, (int)checks["error.chat"]["status"]!);
        Assert.Contains("chat template", (string?)checks["error.chat"]["message"]);
        Assert.Equal(404, (int)checks["error.embeddings"]["status"]!);
    }

    /// <summary>
    /// echo + logprobs as lm-evaluation-harness sends them, and a stream with logprobs and a stop sequence, as the OpenAI
    /// client parsed them: the prompt's tokens then the new one, each token's text in order making up the text, the first
    /// prompt token unscored; every chunk's tokens are its text, and the stream's tokens and logprobs are the unstreamed ones.
    /// </summary>
    private static void AssertLogprobChecks(JsonNode echo, JsonNode stream)
    {
        string text = (string)echo["text"]!;
        var lp = echo["logprobs"]!;
        var tokens = lp["tokens"]!.AsArray().Select(t => (string)t!).ToList();
        var values = lp["token_logprobs"]!.AsArray();
        var tops = lp["top_logprobs"]!.AsArray();
        var offsets = lp["text_offset"]!.AsArray().Select(o => (int)o!).ToList();
        Assert.StartsWith("def add(a, b):\n", text);
        Assert.Equal(text, string.Concat(tokens));
        Assert.Equal((int)echo["usage"]!["prompt_tokens"]! + 1, tokens.Count);
        Assert.Equal(1, (int)echo["usage"]!["completion_tokens"]!);
        Assert.Null(values[0]);
        Assert.Null(tops[0]);
        Assert.Equal(0, offsets[0]);
        for (int i = 1; i < tokens.Count; i++)
        {
            double v = (double)values[i]!;
            Assert.InRange(v, -100, 0);
            var top = tops[i]!.AsObject();
            Assert.InRange(top.Count, 1, 2);   // the most likely token and the token itself (one entry when they are the same)
            Assert.True(top.Select(p => (double)p.Value!).Max() >= v - 1e-6, $"position {i}: {v} is above the top logprob {top.ToJsonString()}");
            Assert.Equal(offsets[i - 1] + tokens[i - 1].Length, offsets[i]);   // ASCII: code points = UTF-16 units
        }
        // The new token is the greedy one: it is the most likely token at the last position.
        Assert.Equal((double)values[^1]!, tops[^1]!.AsObject().Select(p => (double)p.Value!).Max(), 6);

        Assert.True((bool)stream["chunks_match_their_tokens"]!, stream.ToJsonString());
        Assert.Equal((string)stream["unstreamed_text"]!, (string)stream["text"]!);
        Assert.Equal(stream["unstreamed_tokens"]!.ToJsonString(), stream["tokens"]!.ToJsonString());
        Assert.Equal(stream["unstreamed_token_logprobs"]!.ToJsonString(), stream["token_logprobs"]!.ToJsonString());
        Assert.Equal((string)stream["text"]!, string.Concat(stream["tokens"]!.AsArray().Select(t => (string)t!)));
        Assert.DoesNotContain("\n", (string)stream["text"]!);
    }

    [Fact]
    public async Task HiddenStatesOfALayerTheModelLacks_Gets400InOpenAiShape()
    {
        var (response, error) = await SendAsync(HttpMethod.Post, "/v1/completions",
            """{"prompt":"def f():","max_tokens":0,"swarm":{"hidden_states":{"layers":[1,4]}}}"""u8.ToArray());
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(("swarm.hidden_states.layers", "invalid_value"), ((string?)error["param"], (string?)error["code"]));
        Assert.Contains("layer 4 does not exist: the model's layers are 0 … 3", (string?)error["message"]);
    }

    [Fact]
    public async Task InvalidUtf8Body_Gets400InOpenAiShape()
    {
        byte[] body = [.. "{\"prompt\":\"def \""u8, 0xFF, .. "\"}"u8];
        var (response, error) = await SendAsync(HttpMethod.Post, "/v1/completions", body);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request_error", (string?)error["type"]);
        Assert.Equal("invalid_encoding", (string?)error["code"]);
    }

    [Fact]
    public async Task UnsupportedParameter_Gets400NamingIt()
    {
        var (response, error) = await SendAsync(HttpMethod.Post, "/v1/completions",
            """{"prompt":"def f():","max_tokens":2,"presence_penalty":0.5}"""u8.ToArray());
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("presence_penalty", (string?)error["param"]);
        Assert.Equal("unsupported_parameter", (string?)error["code"]);
        Assert.Contains("not supported yet", (string?)error["message"]);
    }

    [Theory]
    [InlineData("POST", "/v1/embeddings")]
    [InlineData("POST", "/v1/edits")]
    [InlineData("GET", "/v1/nothing-here")]
    [InlineData("GET", "/v2/models")]
    public async Task UnknownRoute_Gets404InOpenAiShape(string method, string path)
    {
        var (response, error) = await SendAsync(new HttpMethod(method), path, method == "POST" ? "{}"u8.ToArray() : null);
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("invalid_request_error", (string?)error["type"]);
        Assert.Contains($"{method} {path}", (string?)error["message"]);
    }

    [Theory]
    [InlineData("GET", "/v1/completions", "POST")]
    [InlineData("DELETE", "/v1/models", "GET")]
    [InlineData("PUT", "/healthz", "GET")]
    public async Task WrongMethod_Gets405InOpenAiShape_WithAllow(string method, string path, string allowed)
    {
        var (response, error) = await SendAsync(new HttpMethod(method), path);
        Assert.Equal(HttpStatusCode.MethodNotAllowed, response.StatusCode);
        Assert.Contains(allowed, response.Content.Headers.Allow);
        Assert.Contains(method, (string?)error["message"]);
        Assert.Contains(allowed, (string?)error["message"]);
    }

    [Fact]
    public async Task ModelsRetrieve_ServedModel_AndUnknownIdIs404()
    {
        var model = JsonNode.Parse(await Http.GetStringAsync($"{swarm.Url}/v1/models/{CodeSwarmFixture.ModelName}"))!;
        Assert.Equal(CodeSwarmFixture.ModelName, (string?)model["id"]);
        Assert.Equal("model", (string?)model["object"]);
        Assert.Equal("swarm", (string?)model["owned_by"]);
        var list = JsonNode.Parse(await Http.GetStringAsync($"{swarm.Url}/v1/models"))!;
        Assert.Equal(model.ToJsonString(), list["data"]![0]!.ToJsonString());

        var (response, error) = await SendAsync(HttpMethod.Get, "/v1/models/EleutherAI/pythia-70m");
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("model_not_found", (string?)error["code"]);
        Assert.Equal("model", (string?)error["param"]);
        Assert.Contains("EleutherAI/pythia-70m", (string?)error["message"]);
    }

    [Fact]
    public async Task ChatCompletions_Gets400_BaseModelWithoutChatTemplate()
    {
        var (response, error) = await SendAsync(HttpMethod.Post, "/v1/chat/completions",
            """{"model":"codelm-tiny","messages":[{"role":"user","content":"hi"}]}"""u8.ToArray());
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request_error", (string?)error["type"]);
        Assert.Contains("chat template", (string?)error["message"]);
        Assert.Contains("/v1/completions", (string?)error["message"]);
    }

    [Fact]
    public async Task HttpMetrics_CountRequestsByRouteAndStatus_WithDurations_AndPassPromtool()
    {
        await SendAsync(HttpMethod.Post, "/v1/completions", """{"max_tokens":0}"""u8.ToArray());
        await SendAsync(HttpMethod.Get, "/v1/models/no-such-model");
        var ok = await Http.PostAsync(swarm.Url + "/v1/completions",
            new StringContent("""{"prompt":[1,2,3],"max_tokens":2,"temperature":0}""", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);

        // A request's duration is recorded when its response completes, which the client may see a moment earlier.
        string exposition = "";
        for (int attempt = 0; attempt < 50; attempt++)
        {
            exposition = await Http.GetStringAsync(swarm.Url + "/metrics");
            if (Count(exposition, "/v1/completions", "200") >= 1 && Count(exposition, "/v1/completions", "400") >= 1
                && Count(exposition, "/v1/models/{**model}", "404") >= 1) break;
            await Task.Delay(100);
        }
        Assert.True(Count(exposition, "/v1/completions", "200") >= 1, exposition);
        Assert.True(Count(exposition, "/v1/completions", "400") >= 1, exposition);
        Assert.True(Count(exposition, "/v1/models/{**model}", "404") >= 1, exposition);
        Assert.Matches(new Regex("""^http_server_request_duration_seconds_bucket\{[^}]*http_route="/v1/completions"[^}]*le="[0-9.]+"\} \d+""", RegexOptions.Multiline), exposition);
        await Promtool.AssertValidAsync(exposition, "the coordinator's /metrics with HTTP metrics");
    }

    /// <summary>The <c>_count</c> of the request-duration histogram for one route and status (0 when absent).</summary>
    private static long Count(string exposition, string route, string status)
    {
        long total = 0;
        foreach (Match m in Regex.Matches(exposition, """^http_server_request_duration_seconds_count\{(.*)\} (\d+)\s*$""", RegexOptions.Multiline))
        {
            string labels = m.Groups[1].Value;
            if (labels.Contains($"http_route=\"{route}\"") && labels.Contains($"http_response_status_code=\"{status}\""))
                total += long.Parse(m.Groups[2].Value);
        }
        return total;
    }

    [Fact]
    public async Task SlowBody_Gets408InOpenAiShape_AndThreeClientsLogOneLineWithoutStackTrace()
    {
        var uri = new Uri(swarm.Url);
        async Task<string> SlowClientAsync()
        {
            using var tcp = new TcpClient();
            await tcp.ConnectAsync(uri.Host, uri.Port);
            var stream = tcp.GetStream();
            // Announces 100 kB and sends 10 bytes: Kestrel's minimum body rate (240 B/s after a 5 s grace) ends it.
            await stream.WriteAsync(Encoding.ASCII.GetBytes(
                $"POST /v1/completions HTTP/1.1\r\nHost: {uri.Authority}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"prompt\":"));
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            using var reader = new StreamReader(stream);
            return await reader.ReadToEndAsync(cts.Token);
        }
        var responses = await Task.WhenAll(Enumerable.Range(0, 3).Select(_ => SlowClientAsync()));
        foreach (string raw in responses)
        {
            output.WriteLine(raw);
            Assert.StartsWith("HTTP/1.1 408", raw);
            string body = raw[raw.IndexOf('{')..(raw.LastIndexOf('}') + 1)];
            var error = AssertOpenAiError("application/json", body);
            Assert.Equal("request_timeout", (string?)error["code"]);
        }
        // The coordinator's console log reaches its file asynchronously: wait for the first line, then give any
        // (wrong) further lines the same time to arrive before counting.
        static List<string> SlowLines(string log) => log.Split('\n').Where(l => l.Contains("too slowly", StringComparison.Ordinal)).ToList();
        for (int i = 0; i < 100 && SlowLines(swarm.CoordinatorLog()).Count == 0; i++) await Task.Delay(100);
        await Task.Delay(1000);
        string log = swarm.CoordinatorLog();
        var slowLines = SlowLines(log);
        output.WriteLine(string.Join('\n', slowLines));
        Assert.Single(slowLines);
        Assert.DoesNotContain("BadHttpRequestException", log, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", log, StringComparison.Ordinal);
    }
}
