using System.CommandLine;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Swarm.Coordinator.Security;

namespace Swarm.Cli.Commands;

/// <summary><c>swarm generate</c>: a client of the coordinator's OpenAI-compatible API.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var url = new Option<string>("--url") { Description = "Coordinator HTTP address", DefaultValueFactory = _ => "http://127.0.0.1:8080" };
        var prompt = new Option<string?>("--prompt") { Description = "Prompt text" };
        var promptIds = new Option<string?>("--prompt-ids") { Description = "Prompt as comma-separated token ids" };
        var stream = new Option<bool>("--stream") { Description = "Print tokens as they arrive" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object" };
        var sampling = new CliCommon.SamplingFlags();
        var access = new CoordinatorClientFlags();
        var cmd = new Command("generate", "Generate through a running swarm (HTTP)");
        cmd.Options.Add(url); cmd.Options.Add(prompt); cmd.Options.Add(promptIds); cmd.Options.Add(stream); cmd.Options.Add(json);
        sampling.AddTo(cmd);
        access.AddTo(cmd);
        cmd.SetAction(async (r, ct) =>
        {
            var s = sampling.Read(r);
            string? text = r.GetValue(prompt), ids = r.GetValue(promptIds);
            if ((text is null) == (ids is null)) throw new UsageException("give exactly one of --prompt TEXT or --prompt-ids 1,2,3");
            var body = new JsonObject
            {
                ["prompt"] = ids is not null ? new JsonArray(CliCommon.ParseIds(ids, "--prompt-ids").Select(i => (JsonNode)i).ToArray()) : text,
                ["max_tokens"] = s.MaxNewTokens,
                ["temperature"] = s.Temperature,
                ["top_p"] = s.TopP,
                ["top_k"] = s.TopK,
                ["stream"] = r.GetValue(stream),
            };
            if (s.Seed is long seed) body["seed"] = seed;
            if (s.StopTokenIds.Count > 0) body["stop_token_ids"] = new JsonArray(s.StopTokenIds.Select(i => (JsonNode)i).ToArray());
            using var coordinator = CoordinatorHttpClient.Create(access.Read(r));
            if (r.GetValue(stream)) body["stream_options"] = new JsonObject { ["include_usage"] = true };
            // Streaming prints the text as it arrives; token ids only ever appear with --json (or for a model without a
            // tokenizer, whose completion has no text: then the ids are printed at the end, as without --stream).
            Action<IReadOnlyList<int>, string>? print = r.GetValue(stream) && !r.GetValue(json) ? (_, piece) =>
            {
                Console.Write(piece);
                Console.Out.Flush();
            } : null;
            var result = await Client.CompleteAsync(r.GetValue(url)!, body, ct, print, coordinator);
            if (r.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    token_ids = result.TokenIds,
                    text = result.Text,
                    prompt_tokens = result.PromptTokens,
                    finish_reason = result.FinishReason,
                    timings = new { total_ms = Math.Round(result.TotalMs, 3), time_to_first_token_ms = Math.Round(result.TtftMs, 3) },
                }));
            else if (!r.GetValue(stream) || result.Text.Length == 0)
                Console.WriteLine(result.Text.Length > 0 ? result.Text : string.Join(' ', result.TokenIds));
            else Console.WriteLine();
            return 0;
        });
        return cmd;
    }

    /// <summary>What a completion returned, as the CLI reports it; <paramref name="Swarm"/> is the response's <c>swarm</c> object.</summary>
    internal sealed record Completion(List<int> TokenIds, string Text, int PromptTokens, string FinishReason, double TotalMs, double TtftMs, JsonNode? Swarm);

    /// <summary>Minimal client of POST /v1/completions (JSON and SSE), shared by generate, demo and benches.</summary>
    internal static class Client
    {
        private static readonly HttpClient Http = new() { Timeout = Timeout.InfiniteTimeSpan };

        /// <param name="onChunk">Called with each streamed chunk's token ids and text as it arrives (streaming requests only).</param>
        /// <param name="coordinator">Client with the API key and CA trust to use (default: none, the system trust store).</param>
        public static async Task<Completion> CompleteAsync(string baseUrl, JsonObject body, CancellationToken ct, Action<IReadOnlyList<int>, string>? onChunk = null,
            CoordinatorHttpClient? coordinator = null)
        {
            var sw = Stopwatch.StartNew();
            using var req = new HttpRequestMessage(HttpMethod.Post, baseUrl.TrimEnd('/') + "/v1/completions")
            {
                Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"),
            };
            HttpResponseMessage resp;
            try { resp = await (coordinator?.Http ?? Http).SendAsync(req, HttpCompletionOption.ResponseHeadersRead, ct); }
            catch (HttpRequestException e) when (coordinator is not null) { throw new CommandFailedException(coordinator.Describe(e, baseUrl)); }
            catch (HttpRequestException e) { throw new CommandFailedException($"cannot reach the coordinator at {baseUrl}: {e.Message}"); }
            using (resp)
            {
                bool isStream = resp.Content.Headers.ContentType?.MediaType == "text/event-stream";
                if (!resp.IsSuccessStatusCode)
                {
                    string err = await resp.Content.ReadAsStringAsync(ct);
                    string msg = JsonNode.Parse(err)?["error"]?["message"]?.GetValue<string>() ?? err;
                    if (resp.StatusCode == System.Net.HttpStatusCode.Unauthorized && coordinator is not null) msg = $"{msg.TrimEnd('.')}; {coordinator.UnauthorizedHint}";
                    throw new InvalidOperationException($"HTTP {(int)resp.StatusCode}: {msg}");
                }
                if (!isStream)
                {
                    var j = JsonNode.Parse(await resp.Content.ReadAsStringAsync(ct))!;
                    var choice = j["choices"]![0]!;
                    return new Completion(choice["token_ids"]!.AsArray().Select(x => (int)x!).ToList(), (string?)choice["text"] ?? "",
                        (int?)j["usage"]?["prompt_tokens"] ?? 0, (string?)choice["finish_reason"] ?? "", sw.Elapsed.TotalMilliseconds, sw.Elapsed.TotalMilliseconds,
                        j["swarm"]);
                }
                var ids = new List<int>();
                var text = new StringBuilder();
                string finish = "";
                int promptTokens = 0;
                double ttft = 0;
                JsonNode? swarm = null;
                using var reader = new StreamReader(await resp.Content.ReadAsStreamAsync(ct));
                while (await reader.ReadLineAsync(ct) is { } line)
                {
                    if (!line.StartsWith("data: ")) continue;
                    string data = line[6..];
                    if (data == "[DONE]") break;
                    var j = JsonNode.Parse(data)!;
                    if (j["error"] is { } e) throw new InvalidOperationException($"stream failed: {(string?)e["message"]}");
                    swarm = j["swarm"] ?? swarm;
                    promptTokens = (int?)j["usage"]?["prompt_tokens"] ?? promptTokens;
                    if (j["choices"]!.AsArray() is not [{ } choice, ..]) continue; // the usage chunk
                    var chunkIds = choice["token_ids"]!.AsArray().Select(t => (int)t!).ToList();
                    if (ids.Count == 0 && chunkIds.Count > 0) ttft = sw.Elapsed.TotalMilliseconds;
                    ids.AddRange(chunkIds);
                    string piece = (string?)choice["text"] ?? "";
                    text.Append(piece);
                    if ((string?)choice["finish_reason"] is { } f) finish = f;
                    onChunk?.Invoke(chunkIds, piece);
                }
                return new Completion(ids, text.ToString(), promptTokens, finish, sw.Elapsed.TotalMilliseconds, ttft, swarm);
            }
        }
    }
}
