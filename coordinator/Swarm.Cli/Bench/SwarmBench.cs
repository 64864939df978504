using System.Text.Json.Nodes;
using Swarm.Checkpoints;
using Swarm.Model;
using Swarm.Node;
using Swarm.Sampling;
using Swarm.Transport;

namespace Swarm.Cli.Bench;

/// <summary>
/// <c>swarm bench swarm</c>: decode latency per token and prefill time through 1, 2 and 4 stages (separate
/// processes on loopback) against the single-process engine on the same preset, the per-hop overhead that
/// follows, the transport's 20 MB transfer at an emulated 50 ms RTT on 1 versus 64 channels, and what the secure channel
/// costs (handshake, per-token latency, 20 MB throughput, with encryption on versus off).
/// </summary>
/// <remarks>
/// Encryption cannot be switched off for the node processes (no flag exists, on purpose), so its per-token cost is
/// measured on the transport: the round trip of a decode step's message with and without encryption gives the cost of
/// one message, and a token of an n-stage swarm takes n + 1 messages. That cost is set against the swarm's measured
/// decode latency per token (which runs encrypted).
/// </remarks>
internal static class SwarmBench
{
    public sealed record StageFigure(int Stages, double DecodeMsPerToken, double PrefillMs, double ForwardMsPerToken, double OverheadPerHopMs, double CommPerMessageMs);
    public sealed record Report(string Preset, int PromptTokens, int NewTokens, double LocalDecodeMsPerToken, double LocalPrefillMs,
        List<StageFigure> Swarm, TransportBenchResult Transport)
    {
        /// <summary>What encryption adds to one token of <paramref name="f"/>'s swarm: ms, and percent of its decode latency.</summary>
        public (double Ms, double Percent) EncryptionPerToken(StageFigure f)
        {
            double ms = (f.Stages + 1) * Transport.Encryption.PerMessageMicroseconds / 1000;
            return (ms, 100 * ms / f.DecodeMsPerToken);
        }
    }

    public static async Task<Report> RunAsync(string preset, int[] stageCounts, int threadsPerNode, Action<string> log, CancellationToken ct)
    {
        var cfg = Presets.Get(preset);
        string dir = PresetCache.Ensure(preset, progress: new ConsoleProgress($"creating {preset}"));
        var prompt = Enumerable.Range(0, 128).Select(i => (i * 7919 + 13) % cfg.VocabSize).ToArray();
        const int newTokens = 33;

        log("single process…");
        double localDecode, localPrefill;
        using (var ckpt = Checkpoint.Open(dir))
        using (var gen = LocalPipeline.Load(ckpt))
        {
            gen.Generate(prompt[..16], SamplingOptions.Greedy(4)); // warm-up
            var runs = Enumerable.Range(0, 3).Select(_ => gen.Generate(prompt, SamplingOptions.Greedy(newTokens), cancellationToken: ct)).ToList();
            localDecode = runs.Min(r => r.Timings.DecodeMs / (r.TokenIds.Count - 1));
            localPrefill = runs.Min(r => r.Timings.PrefillMs);
        }

        var figures = new List<StageFigure>();
        foreach (int n in stageCounts)
        {
            if (n > cfg.NumLayers) continue;
            log($"{n} stage(s)…");
            var layers = Enumerable.Range(0, n).Select(i => $"{i * cfg.NumLayers / n}:{(i + 1) * cfg.NumLayers / n}").ToArray();
            await using var swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
            {
                Model = dir, Nodes = n, Layers = layers, WireDtype = "f16", ThreadsPerNode = threadsPerNode,
            }, _ => { }, ct: ct);
            var body = new JsonObject
            {
                ["prompt"] = new JsonArray(prompt.Select(t => (JsonNode)t).ToArray()),
                ["max_tokens"] = newTokens,
                ["temperature"] = 0,
            };
            await PostAsync(swarm.HttpUrl, new JsonObject { ["prompt"] = new JsonArray(1, 2, 3), ["max_tokens"] = 4, ["temperature"] = 0 }, ct);
            var infos = new List<JsonNode>();
            for (int rep = 0; rep < 3; rep++) infos.Add((await PostAsync(swarm.HttpUrl, body, ct))["swarm"]!);
            var best = infos.MinBy(i => (double)i["decode_ms_per_token"]!)!;
            double decode = (double)best["decode_ms_per_token"]!;
            double prefill = infos.Min(i => (double)i["time_to_first_token_ms"]!);
            double forward = best["stages"]!.AsArray().Sum(s => (double)s!["forward_ms"]!);
            int messages = n + 1; // coordinator → stage 1 → … → stage n → coordinator
            figures.Add(new StageFigure(n, decode, prefill, forward, (decode - localDecode) / messages, (decode - forward) / messages));
        }

        log("transport: 20 MB at an emulated 50 ms RTT; encryption on versus off…");
        var transport = await TransportBench.MeasureAsync(20, 50, [1, 64], cfg.HiddenSize, cancellationToken: ct);
        return new Report(preset, prompt.Length, newTokens, localDecode, localPrefill, figures, transport);
    }

    private static async Task<JsonNode> PostAsync(string url, JsonObject body, CancellationToken ct)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromMinutes(5) };
        var resp = await http.PostAsync(url + "/v1/completions", new StringContent(body.ToJsonString(), System.Text.Encoding.UTF8, "application/json"), ct);
        var json = JsonNode.Parse(await resp.Content.ReadAsStringAsync(ct))!;
        if (!resp.IsSuccessStatusCode) throw new InvalidOperationException($"HTTP {(int)resp.StatusCode}: {json["error"]?["message"]}");
        return json;
    }
}
