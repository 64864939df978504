using System.CommandLine;
using System.Diagnostics;
using System.Text.Json.Nodes;
using Swarm.Checkpoints;
using Swarm.Coordinator.Placement;
using Swarm.Engine;
using Swarm.Model;
using Swarm.Tokenization;

namespace Swarm.Cli.Commands;

/// <summary>
/// <c>swarm demo</c>: a whole swarm on loopback — a coordinator and N node processes that the coordinator
/// places automatically (each node's memory budget fits about 1/N of the layers) — one generation through
/// it with a per-stage timing line, then everything shut down.
/// </summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var nodes = new Option<int>("--nodes") { Description = "Node processes", DefaultValueFactory = _ => 3 };
        var model = new Option<string?>("--model") { Description = "Checkpoint folder (default: a random-weight preset)" };
        var preset = new Option<string>("--preset") { Description = "Preset to create and cache on first use", DefaultValueFactory = _ => "pythia-160m" };
        var prompt = new Option<string?>("--prompt") { Description = "Prompt text (needs a tokenizer.json); default: a fixed list of token ids" };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Tokens to generate", DefaultValueFactory = _ => 32 };
        var threads = new Option<int>("--threads") { Description = "CPU threads per node process (0 = all cores)", DefaultValueFactory = _ => 0 };
        var cmd = new Command("demo", "Start a whole swarm on loopback, generate once, shut it down");
        cmd.Options.Add(nodes); cmd.Options.Add(model); cmd.Options.Add(preset); cmd.Options.Add(prompt); cmd.Options.Add(maxNew); cmd.Options.Add(threads);
        cmd.SetAction(async (r, ct) =>
        {
            int n = r.GetValue(nodes);
            if (n < 1 || n > 16) throw new UsageException("--nodes must be between 1 and 16");
            string dir;
            if (r.GetValue(model) is { } m) dir = m;
            else
            {
                string name = r.GetValue(preset)!;
                if (!Presets.All.ContainsKey(name)) throw new UsageException($"--preset: unknown preset '{name}'; known: {string.Join(", ", Presets.All.Keys)}");
                TorchRuntime.Initialize();
                dir = PresetCache.Ensure(name, progress: new ConsoleProgress($"creating {name} (first run only)"));
            }
            var config = ModelConfig.Load(dir);
            if (n > config.NumLayers) throw new UsageException($"--nodes {n}: the model has only {config.NumLayers} layers");
            var tokenizer = TokenizerLoader.TryLoad(dir);
            IReadOnlyList<int> ids = r.GetValue(prompt) is { } text
                ? (tokenizer ?? throw new UsageException("--prompt: this model has no tokenizer.json; leave --prompt out to use token ids")).Encode(text)
                : new[] { 510, 3158, 8516, 30013, 27287, 689, 253, 22658, 4370, 15 }.Select(t => t % config.VocabSize).ToArray();

            // Memory budgets that make the coordinator's placement give each node about 1/n of the layers.
            var shape = ModelShape.FromConfig(config, 4);
            long perLayer = shape.BytesPerLayer + shape.KvBytesPerTokenPerLayer * new PlacementOptions().KvReserveTokens;
            int layersEach = (config.NumLayers + n - 1) / n;
            string memory = $"{perLayer * layersEach + perLayer / 2}";

            var log = (string s) => Console.Error.WriteLine($"  {s}");
            Console.Error.WriteLine($"starting a coordinator and {n} node(s) on loopback for {Path.GetFileName(Path.GetFullPath(dir).TrimEnd('/'))} ({config.NumLayers} layers)…");
            var sw = Stopwatch.StartNew();
            await using var swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions { Model = dir, Nodes = n, Memory = memory, ThreadsPerNode = r.GetValue(threads) }, log, ct: ct);
            Console.Error.WriteLine($"swarm ready in {sw.Elapsed.TotalSeconds:F1} s (logs: {swarm.LogDir})");
            var status = await swarm.GetJsonAsync("/api/swarm", ct);
            foreach (var node in status?["nodes"]?.AsArray() ?? [])
                Console.WriteLine($"  {(string?)node!["name"],-8} {(string?)node["address"],-22} layers [{node["layers"]?[0]}, {node["layers"]?[1]})  {(string?)node["state"]}");

            var body = new JsonObject
            {
                ["prompt"] = new JsonArray(ids.Select(i => (JsonNode)i).ToArray()),
                ["max_tokens"] = r.GetValue(maxNew),
                ["temperature"] = 0,
            };
            using var http = new HttpClient();
            // A short first job warms every process up (JIT, allocator, connections) so the timing line shows steady state.
            var warm = new JsonObject { ["prompt"] = new JsonArray(ids.Take(4).Select(i => (JsonNode)i).ToArray()), ["max_tokens"] = 4, ["temperature"] = 0 };
            (await http.PostAsync(swarm.HttpUrl + "/v1/completions", new StringContent(warm.ToJsonString(), System.Text.Encoding.UTF8, "application/json"), ct)).Dispose();
            var resp = await http.PostAsync(swarm.HttpUrl + "/v1/completions", new StringContent(body.ToJsonString(), System.Text.Encoding.UTF8, "application/json"), ct);
            var json = JsonNode.Parse(await resp.Content.ReadAsStringAsync(ct))!;
            if (!resp.IsSuccessStatusCode) throw new InvalidOperationException($"generation failed: HTTP {(int)resp.StatusCode}: {json["error"]?["message"]}");
            var choice = json["choices"]![0]!;
            var tokens = choice["token_ids"]!.AsArray().Select(t => (int)t!).ToList();
            Console.WriteLine($"prompt ({ids.Count} tokens): {(tokenizer is null ? string.Join(' ', ids) : tokenizer.Decode(ids))}");
            Console.WriteLine($"generated ({tokens.Count} tokens, greedy): {(tokenizer is null ? string.Join(' ', tokens) : (string?)choice["text"])}");
            var info = json["swarm"]!;
            var stages = info["stages"]!.AsArray().Select(s => $"{(string?)s!["node"]} [{s["layers"]![0]},{s["layers"]![1]}) {(double)s["forward_ms"]!:F2} ms");
            double perToken = (double)info["decode_ms_per_token"]!;
            Console.WriteLine($"per-stage forward per token: {string.Join(" | ", stages)} | end to end {perToken:F2} ms/token ({(perToken > 0 ? 1000 / perToken : 0):F1} tokens/s), first token {(double)info["time_to_first_token_ms"]!:F0} ms");
            Console.Error.WriteLine("shutting the swarm down…");
            return 0;
        });
        return cmd;
    }
}
