using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Swarm.Checkpoints;
using Swarm.Coordinator.Placement;
using Swarm.Engine;
using Swarm.Model;
using Swarm.Tokenization;

namespace Swarm.Cli.Commands;

/// <summary>
/// <c>swarm demo</c>: a whole swarm on loopback — a coordinator and N node processes that the coordinator places
/// automatically (each node's memory budget fits about 1/N of the layers) — then one greedy generation through it,
/// streamed as the swarm produces it, with a per-stage timing line; then everything shut down. By default it runs
/// codelm-tiny (a small model trained on Python, shipped with the CLI) on a line of Python, so a person watches code
/// being written across the nodes; <c>--preset pythia-160m</c> runs a realistic-size random-weight model on token ids.
/// </summary>
internal static class DemoCommand
{
    /// <summary>The prompt for a model with a tokenizer when none is given.</summary>
    public const string DefaultPrompt = "def fibonacci(n):";

    public static Command Create()
    {
        var nodes = new Option<int>("--nodes") { Description = "Node processes", DefaultValueFactory = _ => 3 };
        var model = new Option<string?>("--model") { Description = "Checkpoint folder (default: codelm-tiny, shipped with the CLI)" };
        var preset = new Option<string?>("--preset") { Description = "Run a random-weight preset instead (created and cached on first use), e.g. pythia-160m" };
        var prompt = new Option<string?>("--prompt") { Description = $"Prompt text (needs a tokenizer.json); default: \"{DefaultPrompt}\", or token ids for a model without a tokenizer" };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Tokens to generate", DefaultValueFactory = _ => 64 };
        var threads = new Option<int>("--threads") { Description = "CPU threads per node process (0 = the cores shared equally among the node processes)", DefaultValueFactory = _ => 0 };
        var cmd = new Command("demo", "Start a whole swarm on loopback, generate once (streamed), shut it down");
        cmd.Options.Add(nodes); cmd.Options.Add(model); cmd.Options.Add(preset); cmd.Options.Add(prompt); cmd.Options.Add(maxNew); cmd.Options.Add(threads);
        cmd.SetAction(async (r, ct) =>
        {
            int n = r.GetValue(nodes);
            if (n < 1 || n > 16) throw new UsageException("--nodes must be between 1 and 16");
            string dir = ModelFolder(r.GetValue(model), r.GetValue(preset));
            var config = ModelConfig.Load(dir);
            if (n > config.NumLayers) throw new UsageException($"--nodes {n}: the model has only {config.NumLayers} layers");
            var tokenizer = TokenizerLoader.TryLoad(dir);
            if (tokenizer is null && r.GetValue(prompt) is not null)
                throw new UsageException("--prompt: this model has no tokenizer.json; leave --prompt out to use token ids");
            string? text = tokenizer is null ? null : r.GetValue(prompt) ?? DefaultPrompt;
            IReadOnlyList<int> ids = text is not null ? tokenizer!.Encode(text)
                : [.. new[] { 510, 3158, 8516, 30013, 27287, 689, 253, 22658, 4370, 15 }.Select(t => t % config.VocabSize)];
            if (ids.Count == 0) throw new UsageException("--prompt: the text encodes to no tokens");

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
            // Coverage may come before every node has loaded (a replica still loading): list them once all serve.
            var status = await swarm.GetJsonAsync("/api/swarm", ct);
            for (int wait = 0; wait < 100 && status?["nodes"]?.AsArray().Any(x => (string?)x!["state"] != "serving") == true; wait++)
            {
                await Task.Delay(100, ct);
                status = await swarm.GetJsonAsync("/api/swarm", ct);
            }
            foreach (var node in status?["nodes"]?.AsArray() ?? [])
                Console.WriteLine($"  {(string?)node!["name"],-8} {(string?)node["address"],-22} layers [{node["layers"]?[0]}, {node["layers"]?[1]})  {(string?)node["state"]}");

            JsonNode Prompt(IEnumerable<int> tokens) => new JsonArray([.. tokens.Select(i => (JsonNode)i)]);
            // A short first job warms every process up (JIT, allocator, connections) so the timing line shows steady state.
            var warm = new JsonObject { ["prompt"] = Prompt(ids.Take(4)), ["max_tokens"] = 4, ["temperature"] = 0 };
            await GenerateCommand.Client.CompleteAsync(swarm.HttpUrl, warm, ct);

            var body = new JsonObject
            {
                ["prompt"] = Prompt(ids), ["max_tokens"] = r.GetValue(maxNew), ["temperature"] = 0,
                ["stream"] = true, ["stream_options"] = new JsonObject { ["include_usage"] = true },
            };
            Console.WriteLine();
            Console.WriteLine(text is null
                ? $"prompt ({ids.Count} token ids): {string.Join(' ', ids)}\ngenerated token ids, streamed as the swarm samples them:"
                : $"prompt ({ids.Count} tokens) and its greedy completion, streamed as the swarm writes it:\n");
            Console.Write(text ?? "");
            var result = await GenerateCommand.Client.CompleteAsync(swarm.HttpUrl, body, ct, (tokens, piece) =>
            {
                Console.Write(text is null ? string.Concat(tokens.Select(t => $" {t}")) : piece);
                Console.Out.Flush();
            });
            Console.WriteLine();
            Console.WriteLine();
            Console.WriteLine(Timings(result));
            Console.Error.WriteLine("shutting the swarm down…");
            return 0;
        });
        return cmd;
    }

    /// <summary>The checkpoint to run: <c>--model</c>, a cached <c>--preset</c>, or the shipped codelm-tiny.</summary>
    private static string ModelFolder(string? model, string? preset)
    {
        if (model is not null && preset is not null) throw new UsageException("give --model or --preset, not both");
        if (model is not null) return model;
        if (preset is not null)
        {
            if (!Presets.All.ContainsKey(preset)) throw new UsageException($"--preset: unknown preset '{preset}'; known: {string.Join(", ", Presets.All.Keys)}");
            TorchRuntime.Initialize();
            return PresetCache.Ensure(preset, progress: new ConsoleProgress($"creating {preset} (first run only)"));
        }
        string builtIn = BuiltInModels.CodeLmTiny;
        if (!File.Exists(Path.Combine(builtIn, "config.json")))
            throw new CommandFailedException($"the demo model is missing from {builtIn} (the build copies it there from coordinator/Swarm.Cli/Models); rebuild, or pass --model DIR");
        return builtIn;
    }

    /// <summary>"per-stage forward per token: node-1 [0,2) 0.41 ms | … | end to end …" from the stream's swarm object.</summary>
    private static string Timings(GenerateCommand.Completion result)
    {
        var info = result.Swarm ?? throw new InvalidOperationException("the stream ended without its swarm object");
        var stages = info["stages"]!.AsArray().Select(s =>
            string.Create(CultureInfo.InvariantCulture, $"{(string?)s!["node"]} [{s["layers"]![0]},{s["layers"]![1]}) {(double)s["forward_ms"]!:F2} ms"));
        double perToken = (double)info["decode_ms_per_token"]!;
        return string.Create(CultureInfo.InvariantCulture,
            $"{result.TokenIds.Count} tokens ({result.FinishReason}); per-stage forward per token: {string.Join(" | ", stages)} | end to end {perToken:F2} ms/token ({(perToken > 0 ? 1000 / perToken : 0):F1} tokens/s), first token {(double)info["time_to_first_token_ms"]!:F0} ms");
    }
}
