using System.Net.Http.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Integration;

/// <summary>
/// Streamed completions against a live 2-node codelm-tiny swarm: a stream says exactly what the same request
/// unstreamed says (text and token ids, with stop sequences and an incomplete last character), completion ids follow
/// one scheme, <c>stream_options.include_usage</c> ends the stream with OpenAI's usage chunk, and
/// <c>swarm generate --stream</c> prints the text only.
/// </summary>
[Collection("processes")]
public class CompletionStreamTests(CodeSwarmFixture swarm, ITestOutputHelper output) : IClassFixture<CodeSwarmFixture>
{
    private const string CodePrompt = "def add(a, b):\n";

    private static string Body(string prompt, int maxTokens, bool stream, string extra = "") =>
        new JsonObject { ["prompt"] = prompt, ["max_tokens"] = maxTokens, ["temperature"] = 0, ["stream"] = stream }
            .ToJsonString().TrimEnd('}') + extra + "}";

    private async Task<JsonNode> UnstreamedAsync(string body)
    {
        var (status, json) = await SwarmClient.PostAsync(swarm.Url, body);
        Assert.True(status == 200, $"HTTP {status}: {json?.ToJsonString()}");
        output.WriteLine($"unstreamed: {json!["choices"]![0]!.ToJsonString()}");
        return json;
    }

    /// <summary>The stream's text, token ids and finish reason, assembled as a client would.</summary>
    private async Task<(string Text, int[] Ids, string? Finish, List<JsonNode> Events)> StreamedAsync(string body)
    {
        var events = await SwarmClient.StreamEventsAsync(swarm.Url, body);
        var choices = events.Select(e => e["choices"]!.AsArray()).Where(c => c.Count > 0).Select(c => c[0]!).ToList();
        string text = string.Concat(choices.Select(c => (string?)c["text"]));
        int[] ids = [.. choices.SelectMany(c => c["token_ids"]!.AsArray().Select(t => (int)t!))];
        output.WriteLine($"streamed: {JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(text))!.ToJsonString()} {string.Join(',', ids)}");
        return (text, ids, choices.Select(c => (string?)c["finish_reason"]).LastOrDefault(f => f is not null), events);
    }

    private static void AssertSame(JsonNode unstreamed, (string Text, int[] Ids, string? Finish, List<JsonNode> Events) streamed)
    {
        var choice = unstreamed["choices"]![0]!;
        Assert.Equal((string)choice["text"]!, streamed.Text);
        Assert.Equal(choice["token_ids"]!.AsArray().Select(t => (int)t!), streamed.Ids);
        Assert.Equal((string?)choice["finish_reason"], streamed.Finish);
    }

    [Fact]
    public async Task StopSequence_NeverStreamed_StreamEqualsUnstreamedTextAndTokenIds()
    {
        string greedy = (string)(await UnstreamedAsync(Body(CodePrompt, 24, false)))["choices"]![0]!["text"]!;
        Assert.True(greedy.Length >= 16, greedy);
        // Two-character stops from across the completion: some begin inside a token, some span two.
        foreach (int at in new[] { 2, 5, 9, 13 })
        {
            string stop = greedy.Substring(at, 2);
            string extra = ",\"stop\":" + System.Text.Json.JsonSerializer.Serialize(new[] { stop });
            var unstreamed = await UnstreamedAsync(Body(CodePrompt, 24, false, extra));
            var streamed = await StreamedAsync(Body(CodePrompt, 24, true, extra));

            Assert.Equal("stop", (string?)unstreamed["choices"]![0]!["finish_reason"]);
            AssertSame(unstreamed, streamed);
            Assert.DoesNotContain(stop, streamed.Text);
        }
    }

    [Fact]
    public async Task IncompleteUtf8CharacterAtTheLimit_SameReplacementCharacterInBothModes()
    {
        // codelm-tiny continues this prompt with three-byte characters, one byte per token: 4 tokens end mid-character.
        const string prompt = "s = \"€";
        var unstreamed = await UnstreamedAsync(Body(prompt, 4, false));
        Assert.EndsWith("\uFFFD", (string)unstreamed["choices"]![0]!["text"]!);

        AssertSame(unstreamed, await StreamedAsync(Body(prompt, 4, true)));
    }

    [Fact]
    public async Task CompletionIds_StreamedAndUnstreamed_FollowOneScheme()
    {
        var scheme = new Regex("^cmpl-([a-z0-9]{8})-([0-9]+)$");
        var unstreamed = scheme.Match((string)(await UnstreamedAsync(Body(CodePrompt, 2, false)))["id"]!);
        var events = (await StreamedAsync(Body(CodePrompt, 2, true))).Events;
        var streamed = events.Select(e => scheme.Match((string)e["id"]!)).ToList();

        Assert.True(unstreamed.Success, unstreamed.Value);
        Assert.All(streamed, m => Assert.True(m.Success, m.Value));
        Assert.Single(streamed.Select(m => m.Value).Distinct());
        Assert.Equal(unstreamed.Groups[1].Value, streamed[0].Groups[1].Value);
        Assert.NotEqual(unstreamed.Value, streamed[0].Value);
    }

    [Fact]
    public async Task IncludeUsage_EndsWithAUsageChunkCarryingTheSwarmObject()
    {
        var unstreamed = await UnstreamedAsync(Body(CodePrompt, 6, false));
        var streamed = await StreamedAsync(Body(CodePrompt, 6, true, ",\"stream_options\":{\"include_usage\":true}"));

        AssertSame(unstreamed, streamed);
        var last = streamed.Events[^1];
        Assert.Empty(last["choices"]!.AsArray());
        Assert.Equal(unstreamed["usage"]!.ToJsonString(), last["usage"]!.ToJsonString());
        Assert.Equal(2, last["swarm"]!["stages"]!.AsArray().Count);
        Assert.All(streamed.Events[..^1], e => Assert.Null(e["usage"]));
        Assert.All(streamed.Events[..^1], e => Assert.Null(e["swarm"]));

        // Without include_usage there is no usage chunk; the chunk with the finish reason is the last and has the swarm object.
        var plain = (await StreamedAsync(Body(CodePrompt, 6, true))).Events;
        Assert.All(plain, e => Assert.Null(e["usage"]));
        Assert.Equal("length", (string?)plain[^1]["choices"]![0]!["finish_reason"]);
        Assert.Equal(2, plain[^1]["swarm"]!["stages"]!.AsArray().Count);
    }

    [Fact]
    public async Task RunningJob_ShowsItsProgressSoFarInApiSwarm()
    {
        using var http = new HttpClient();
        using var request = new HttpRequestMessage(HttpMethod.Post, swarm.Url + "/v1/completions")
        {
            Content = new StringContent(Body(CodePrompt, 2000, true), System.Text.Encoding.UTF8, "application/json"),
        };
        using (var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead))
        {
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            string id = "";
            for (int chunks = 0; chunks < 5 && await reader.ReadLineAsync() is { } line;)
                if (line.StartsWith("data: ", StringComparison.Ordinal)) { chunks++; id = (string)JsonNode.Parse(line[6..])!["id"]!; }

            // The client reads no further: the job is running, with at least the 5 tokens it was sent.
            var status = (await http.GetFromJsonAsync<JsonNode>(swarm.Url + "/api/swarm"))!;
            output.WriteLine(status["jobs"]!.ToJsonString());
            var job = status["jobs"]!["recent"]!.AsArray().Single(j => (string?)j!["id"] == id)!;
            Assert.Equal("running", (string?)job["state"]);
            Assert.True((int)job["completion_tokens"]! >= 5, job.ToJsonString());
            Assert.True((double?)job["ttft_ms"] > 0, job.ToJsonString());
            Assert.True((double?)job["tokens_per_s"] > 0, job.ToJsonString());
        }
    }

    [Fact]
    public async Task GenerateStream_PrintsTheTextOnly_EvenWhenATokenCarriesNoText()
    {
        // Each token is one byte of a three-byte character: two of every three chunks carry an id and no text.
        const string prompt = "s = \"€";
        string expected = (string)(await UnstreamedAsync(Body(prompt, 8, false)))["choices"]![0]!["text"]!;

        var (exit, stdout, stderr) = await CliProcess.RunAsync(SwarmProgram.Cli, TimeSpan.FromMinutes(2),
            "generate", "--url", swarm.Url, "--prompt", prompt, "--max-new-tokens", "8", "--stream");

        output.WriteLine($"exit {exit}\n{stdout}\n{stderr}");
        Assert.Equal(0, exit);
        Assert.Equal(expected + "\n", stdout);
    }
}
