using System.Text;
using System.Text.Json.Nodes;
using Xunit;

namespace Swarm.Tests.Integration;

/// <summary>A minimal HTTP client of the coordinator for tests: JSON and streamed completions.</summary>
internal static class SwarmClient
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromMinutes(3) };

    public static JsonObject Body(IEnumerable<long> prompt, int maxTokens, bool stream = false) => new()
    {
        ["prompt"] = new JsonArray(prompt.Select(t => (JsonNode)t).ToArray()),
        ["max_tokens"] = maxTokens,
        ["temperature"] = 0,
        ["stream"] = stream,
    };

    public static async Task<(int Status, JsonNode? Json)> PostAsync(string url, string body)
    {
        var resp = await Http.PostAsync(url + "/v1/completions", new StringContent(body, Encoding.UTF8, "application/json"));
        string text = await resp.Content.ReadAsStringAsync();
        JsonNode? json = null;
        try { json = JsonNode.Parse(text); } catch (System.Text.Json.JsonException) { }
        return ((int)resp.StatusCode, json);
    }

    public static async Task<long[]> CompleteAsync(string url, IEnumerable<long> prompt, int maxTokens)
    {
        var (status, json) = await PostAsync(url, Body(prompt, maxTokens).ToJsonString());
        Assert.True(status == 200, $"HTTP {status}: {json?.ToJsonString()}");
        return json!["choices"]![0]!["token_ids"]!.AsArray().Select(t => (long)t!).ToArray();
    }

    /// <summary>Streams a completion; <paramref name="onToken"/> sees (index, token) as each arrives.</summary>
    public static async Task<(long[] Tokens, string Finish, List<double> ArrivalMs)> StreamAsync(string url, IEnumerable<long> prompt, int maxTokens,
        Func<int, long, Task>? onToken = null)
    {
        using var req = new HttpRequestMessage(HttpMethod.Post, url + "/v1/completions")
        {
            Content = new StringContent(Body(prompt, maxTokens, stream: true).ToJsonString(), Encoding.UTF8, "application/json"),
        };
        using var resp = await Http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead);
        if (!resp.IsSuccessStatusCode) Assert.Fail($"HTTP {(int)resp.StatusCode}: {await resp.Content.ReadAsStringAsync()}");
        var tokens = new List<long>();
        var arrivals = new List<double>();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        string finish = "";
        using var reader = new StreamReader(await resp.Content.ReadAsStreamAsync());
        while (await reader.ReadLineAsync() is { } line)
        {
            if (!line.StartsWith("data: ")) continue;
            if (line == "data: [DONE]") break;
            var j = JsonNode.Parse(line[6..])!;
            Assert.True(j["error"] is null, $"stream error: {j["error"]?.ToJsonString()}");
            var choice = j["choices"]![0]!;
            foreach (var t in choice["token_ids"]!.AsArray())
            {
                tokens.Add((long)t!);
                arrivals.Add(sw.Elapsed.TotalMilliseconds);
                if (onToken is not null) await onToken(tokens.Count - 1, (long)t!);
            }
            if ((string?)choice["finish_reason"] is { } f) finish = f;
        }
        return (tokens.ToArray(), finish, arrivals);
    }

    /// <summary>Posts a streaming request and returns every event's JSON in order; fails unless the stream ends with [DONE].</summary>
    public static async Task<List<JsonNode>> StreamEventsAsync(string url, string body)
    {
        using var req = new HttpRequestMessage(HttpMethod.Post, url + "/v1/completions")
        {
            Content = new StringContent(body, Encoding.UTF8, "application/json"),
        };
        using var resp = await Http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead);
        if (!resp.IsSuccessStatusCode) Assert.Fail($"HTTP {(int)resp.StatusCode}: {await resp.Content.ReadAsStringAsync()}");
        Assert.Equal("text/event-stream", resp.Content.Headers.ContentType?.MediaType);
        var events = new List<JsonNode>();
        using var reader = new StreamReader(await resp.Content.ReadAsStreamAsync());
        while (await reader.ReadLineAsync() is { } line)
        {
            if (!line.StartsWith("data: ")) continue;
            if (line == "data: [DONE]") return events;
            events.Add(JsonNode.Parse(line[6..])!);
        }
        Assert.Fail($"the stream ended without [DONE] after {events.Count} events");
        return events;
    }
}
