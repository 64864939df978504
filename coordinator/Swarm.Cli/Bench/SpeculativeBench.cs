using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;

namespace Swarm.Cli.Bench;

/// <summary>
/// <c>swarm bench speculative</c>: tokens per target pass and tokens/s of greedy decoding at an emulated WAN round trip,
/// plain versus each speculation mode, on codelm-tiny (real weights, real code prompts) split over two node processes:
/// prompt lookup (<c>ngram</c>), the target as its own draft model (<c>draft=target</c>, the upper bound: every draft is
/// accepted, so a pass yields k + 1 tokens), and codelm-tiny's trained 1-layer draft (<c>draft=codelm-tiny-draft</c>), the
/// draft models run by the last-stage node (<c>--draft-model</c> on the coordinator and the nodes).
/// The round trip is emulated by the nodes' <c>--simulate-latency-ms</c> (each stage delays its output by half the RTT,
/// so every message of a pass's critical path but the coordinator's first costs a one-way delay). Each mode runs on a
/// fresh swarm; the outputs must equal plain decoding's (reported, not asserted).
/// </summary>
internal static class SpeculativeBench
{
    /// <summary>One mode's figures over all prompts.</summary>
    public sealed record ModeFigures(string Mode, int Tokens, int Passes, int Drafted, int Accepted, double Seconds, bool SameAsPlain)
    {
        /// <summary>Tokens generated per pass through the pipeline.</summary>
        public double TokensPerPass => Passes == 0 ? 0 : (double)Tokens / Passes;

        /// <summary>Decode throughput over the measured jobs.</summary>
        public double TokensPerSecond => Tokens / Seconds;
    }

    public sealed record Report(string Model, double RttMs, int TokensPerJob, int Prompts, IReadOnlyList<ModeFigures> Modes);

    /// <summary>Code with repetition in it (what prompt lookup can use), as a coding assistant sees.</summary>
    private static readonly string[] Prompts =
    [
        "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n        self.items.append(item)\n\n    def pop(self):\n        return self.items.pop()\n\n    def ",
        "import os\nimport sys\n\n\ndef main(argv):\n    if len(argv) < 2:\n        print('usage: main FILE')\n        return 1\n    path = argv[1]\n    if not os.path.exists(path):\n        print('no such file: ' + path)\n        return 1\n    ",
        "def parse(text):\n    result = {}\n    for line in text.splitlines():\n        line = line.strip()\n        if not line:\n            continue\n        key, value = line.split('=', 1)\n        result[key.strip()] = value.strip()\n    return result\n\n\ndef ",
    ];

    /// <summary>A row of the bench: its label, and the draft model (null: <paramref name="Speculative"/> alone).</summary>
    private sealed record Mode(string Label, string Speculative, string? DraftModel = null);

    private static readonly Mode[] Modes =
    [
        new("none", "none"), new("ngram", "ngram"),
        new("draft=target", "draft", BuiltInModels.CodeLmTiny), new("draft=codelm-tiny-draft", "draft", BuiltInModels.CodeLmTinyDraft),
    ];

    public static async Task<Report> RunAsync(int tokens, double rttMs, int maxDraft, int threadsPerNode, Action<string> log, CancellationToken ct)
    {
        var figures = new List<ModeFigures>();
        List<List<int>>? plain = null;
        foreach (var (mode, speculative, draftModel) in Modes)
        {
            string[] draft = draftModel is null ? [] : ["--draft-model", draftModel];
            await using var swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
            {
                Model = BuiltInModels.CodeLmTiny, Nodes = 2, Layers = ["0:2", "2:4"], ThreadsPerNode = threadsPerNode,
                CoordinatorArgs = ["--speculative", speculative, "--speculative-max", maxDraft.ToString(CultureInfo.InvariantCulture), .. draft],
                NodeArgs = ["--simulate-latency-ms", (rttMs / 2).ToString("0.###", CultureInfo.InvariantCulture), .. draft],
            }, log, ct: ct);
            log($"{mode}: warm-up…");
            await CompleteAsync(swarm.HttpUrl, Prompts[0], 4, ct);
            log($"{mode}: {Prompts.Length} prompts × {tokens} tokens at {rttMs} ms RTT…");
            var outputs = new List<List<int>>();
            int passes = 0, drafted = 0, accepted = 0;
            var sw = Stopwatch.StartNew();
            foreach (string prompt in Prompts)
            {
                var c = await CompleteAsync(swarm.HttpUrl, prompt, tokens, ct);
                outputs.Add(c.TokenIds);
                if (c.Swarm?["speculative"] is JsonObject sp)
                {
                    passes += (int)sp["passes"]!;
                    drafted += (int)sp["drafted"]!;
                    accepted += (int)sp["accepted"]!;
                }
                else passes += c.TokenIds.Count;
            }
            double seconds = sw.Elapsed.TotalSeconds;
            plain ??= outputs;
            bool same = outputs.Zip(plain).All(p => p.First.SequenceEqual(p.Second));
            figures.Add(new ModeFigures(mode, outputs.Sum(o => o.Count), passes, drafted, accepted, seconds, same));
        }
        return new Report("codelm-tiny", rttMs, tokens, Prompts.Length, figures);
    }

    private static Task<Commands.GenerateCommand.Completion> CompleteAsync(string url, string prompt, int tokens, CancellationToken ct) =>
        Commands.GenerateCommand.Client.CompleteAsync(url, new JsonObject { ["prompt"] = prompt, ["max_tokens"] = tokens, ["temperature"] = 0 }, ct);
}
