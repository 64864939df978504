using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Swarm.Checkpoints;
using Swarm.Model;
using Swarm.Node;
using Swarm.Protocol;

namespace Swarm.Cli.Bench;

/// <summary>
/// <c>swarm bench batching</c>: aggregate decode throughput and per-token latency at several numbers of concurrent
/// jobs — on one node (an in-process <see cref="StageHost"/> holding every layer, no network) and through a
/// 3-node swarm on loopback (HTTP, streaming). Every job has a 16-token random prompt and generates
/// <c>tokens</c> new tokens greedily; all jobs of a level start together.
/// Aggregate decode tokens/s = tokens arriving while all N jobs are decoding (after the last job's first token,
/// up to the first job's last token) ÷ that time; per-token latency = the time between consecutive tokens of one job.
/// Then, on the same node, <see cref="StaggeredArrivals"/>: 16 concurrent jobs whose long prompts keep arriving while the
/// others decode, which shows whether prefill chunks stall decodes (p95 gap against p50).
/// Each level runs <see cref="Settings.Repeats"/> times, the levels taking turns (1, 4, 16, 64, 1, 4, …) so a slow spell of
/// the machine falls on all of them alike, and the run with the most tokens/s stands for its level, as <c>bench local</c>
/// keeps the best of 3.
/// </summary>
internal static class BatchingBench
{
    /// <summary>What to run: the model, the numbers of concurrent jobs, new tokens per job, the weight format, threads, runs per level.</summary>
    public sealed record Settings(string Preset, int[] Levels, int Tokens, WeightFormat Weights, int Threads, bool Swarm, bool Arrivals, int Repeats = 3);

    /// <summary>Figures per concurrency level (same order as <see cref="Concurrency"/>); <see cref="Arrivals"/> null when skipped.</summary>
    public sealed record Report(string Preset, string Weights, int Tokens, int[] Concurrency, double[] Aggregate, double[] P50, double[] P95,
        double[] SwarmAggregate, double[] SwarmP50, double[] SwarmP95, int[] PeakBatch, int ArrivalSlots, StaggeredArrivals.Result? Arrivals,
        Ceiling Ceiling, int Repeats);

    /// <summary>
    /// The one node's ceiling, measured in the same run: N jobs decode at most N tokens per step, and a step takes at least
    /// the time to read the weights once (<see cref="BandwidthGBps"/>) and at least the time of N tokens' matrix products
    /// at the FMA peak (<see cref="FmaPeakGflops"/>); attention and everything else are left out, so the ceiling is generous.
    /// Both are measured before every round of runs and the highest is kept, as the runs keep their best: on a shared
    /// machine the bandwidth moves from one minute to the next, and a single reading can sit below what a run then gets.
    /// </summary>
    public sealed record Ceiling(double BandwidthGBps, double FmaPeakGflops, long WeightBytesPerStep, double FlopsPerToken)
    {
        /// <summary>Tokens/s at most with <paramref name="jobs"/> jobs decoding together.</summary>
        public double TokensPerSecond(int jobs) =>
            jobs / Math.Max(WeightBytesPerStep / (BandwidthGBps * 1e9), jobs * FlopsPerToken / (FmaPeakGflops * 1e9));
    }

    /// <summary>Concurrent slots of the arrivals run (<see cref="StaggeredArrivals"/>).</summary>
    public const int ArrivalSlots = 16;

    private sealed record Level(double Aggregate, double P50, double P95, int PeakBatch = 0);

    private const int PromptTokens = 16;

    public static async Task<Report> RunAsync(Settings s, Action<string> log, CancellationToken ct)
    {
        var levels = s.Levels;
        double bandwidth = 0, peak = 0;
        void MeasureMachine()
        {
            double b = Roofline.MeasureStreamingReadGBps(), f = Roofline.MeasureFmaPeakGflops();
            (bandwidth, peak) = (Math.Max(bandwidth, b), Math.Max(peak, f));
            log($"machine: {b:F1} GB/s streaming read, {f:F0} GFLOP/s f32 FMA peak");
        }
        log("measuring the machine's streaming read bandwidth and FMA peak…");
        MeasureMachine();
        Ceiling? ceiling = null;
        log($"preparing {s.Preset} (cached after the first run)…");
        string dir = PresetCache.Ensure(s.Preset);
        var agg = new double[levels.Length]; var p50 = new double[levels.Length]; var p95 = new double[levels.Length];
        var sAgg = new double[levels.Length]; var sP50 = new double[levels.Length]; var sP95 = new double[levels.Length];
        var peaks = new int[levels.Length];
        int vocab;
        StaggeredArrivals.Result? arrivals = null;
        using (var ckpt = Checkpoint.Open(dir))
        {
            vocab = ckpt.Config.VocabSize;
            using var host = new StageHost(StageModel.Load(ckpt, 0, ckpt.Config.NumLayers, s.Weights), 2L << 30);
            // Warm-up: the largest level once in full, so the batched kernels are compiled and tiered up and the KV pool's
            // storage has grown to its size (growing it copies every layer's keys and values) before anything is timed.
            OneNode(host, levels.Max(), s.Tokens, vocab, seed: 99);
            for (int run = 0; run < s.Repeats; run++)
                for (int i = 0; i < levels.Length; i++)
                {
                    if (run > 0 && i == 0) MeasureMachine();
                    var l = OneNode(host, levels[i], s.Tokens, vocab, seed: i);
                    if (l.Aggregate > agg[i]) (agg[i], p50[i], p95[i], peaks[i]) = (l.Aggregate, l.P50, l.P95, l.PeakBatch);
                    log($"one node, {levels[i],2} jobs, run {run + 1}/{s.Repeats}: {l.Aggregate,7:F1} tokens/s   p50 {l.P50,6:F1} ms   p95 {l.P95,6:F1} ms");
                }
            ceiling = new Ceiling(bandwidth, peak, host.Model.WeightBytesReadPerToken, FlopsPerToken(ckpt.Config));
            if (s.Arrivals)
            {
                var a = StaggeredArrivals.Run(host, ArrivalSlots, jobsPerSlot: 3, vocab, seed: 7);
                log($"one node, {ArrivalSlots} jobs with {StaggeredArrivals.PromptTokens}-token prompts arriving while others decode: " +
                    $"{a.Aggregate,7:F1} tokens/s   p50 {a.P50,6:F1} ms   p95 {a.P95,6:F1} ms");
                arrivals = a;
            }
        }
        if (s.Swarm)
        {
            int layers = Presets.Get(s.Preset).NumLayers;
            int a = layers / 3, b = 2 * layers / 3;
            await using var local = await LocalSwarm.StartAsync(new LocalSwarmOptions
            {
                Model = dir, Nodes = 3, Layers = [$"0:{a}", $"{a}:{b}", $"{b}:{layers}"], ThreadsPerNode = s.Threads,
                NodeArgs = ["--weights", s.Weights.Name()],
                CoordinatorArgs = ["--max-concurrent-jobs", levels.Max().ToString()],
            }, log, ct: ct);
            await OverHttpAsync(local.HttpUrl, levels.Max(), s.Tokens, vocab, 99, ct); // warm-up, as for the one node
            for (int run = 0; run < s.Repeats; run++)
                for (int i = 0; i < levels.Length; i++)
                {
                    var l = await OverHttpAsync(local.HttpUrl, levels[i], s.Tokens, vocab, i, ct);
                    if (l.Aggregate > sAgg[i]) (sAgg[i], sP50[i], sP95[i]) = (l.Aggregate, l.P50, l.P95);
                    log($"3-node swarm, {levels[i],2} jobs, run {run + 1}/{s.Repeats}: {l.Aggregate,7:F1} tokens/s   p50 {l.P50,6:F1} ms   p95 {l.P95,6:F1} ms");
                }
        }
        return new Report(s.Preset, s.Weights.Name(), s.Tokens, levels, agg, p50, p95, sAgg, sP50, sP95, peaks, ArrivalSlots, arrivals, ceiling!, s.Repeats);
    }

    /// <summary>FLOPs of one token's matrix products: q/k/v, the attention's projection, the MLP and the head (2 per weight).</summary>
    private static double FlopsPerToken(ModelConfig c) =>
        2.0 * ((double)c.NumLayers * (4L * c.HiddenSize * c.HiddenSize + 2L * c.HiddenSize * c.IntermediateSize) + (double)c.VocabSize * c.HiddenSize);

    private static long[] Prompt(int vocab, int seed, int job)
    {
        var rng = new Random(seed * 1000 + job);
        return Enumerable.Range(0, PromptTokens).Select(_ => (long)rng.Next(vocab)).ToArray();
    }

    private static Level OneNode(StageHost host, int jobs, int tokens, int vocab, int seed)
    {
        var clock = Stopwatch.StartNew();
        var times = Enumerable.Range(0, jobs).Select(_ => new List<double>()).ToArray();
        var route = new[] { new Hop { NodeId = 1, Endpoint = "local", Layers = host.Range } };
        long session = (long)seed << 20;
        var prompts = Enumerable.Range(0, jobs).Select(j => Prompt(vocab, seed, j)).ToArray();
        ForwardRequest Step(int job, int step, long[] input, int start) => new()
        {
            JobId = job, SessionId = session + job, Step = step, Kind = step == 0 ? StepKind.Prefill : StepKind.Decode,
            StartPosition = start, Input = WireTensor.FromTokenIds(input), Route = route, Sampling = new SamplingParams { Temperature = 0 },
        };
        for (int j = 0; j < jobs; j++) host.Submit(Step(j, 0, prompts[j], 0), j);
        int finished = 0, peak = 0;
        while (finished < jobs)
        {
            var completed = host.RunIteration();
            peak = Math.Max(peak, host.Stats.LastBatch);
            foreach (var c in completed)
            {
                int j = (int)c.State!;
                if (c.Output?.Token is not int token)
                    throw new InvalidOperationException($"bench job {j} step {c.Request.Step} failed: {c.Error?.Message}");
                times[j].Add(clock.Elapsed.TotalMilliseconds);
                int n = times[j].Count;
                if (n == tokens) { host.Close(session + j); finished++; }
                else host.Submit(Step(j, n, [token], PromptTokens + n - 1), j);
            }
        }
        return Summarise(times) with { PeakBatch = peak };
    }

    private static async Task<Level> OverHttpAsync(string url, int jobs, int tokens, int vocab, int seed, CancellationToken ct)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromMinutes(10) };
        var clock = Stopwatch.StartNew();
        var times = await Task.WhenAll(Enumerable.Range(0, jobs).Select(async j =>
        {
            var body = new JsonObject
            {
                ["prompt"] = new JsonArray(Prompt(vocab, seed, j).Select(t => (JsonNode)t).ToArray()),
                ["max_tokens"] = tokens, ["temperature"] = 0, ["stream"] = true,
            };
            using var req = new HttpRequestMessage(HttpMethod.Post, url + "/v1/completions")
            {
                Content = new StringContent(body.ToJsonString(), Encoding.UTF8, new MediaTypeHeaderValue("application/json")),
            };
            using var resp = await http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead, ct);
            if (!resp.IsSuccessStatusCode)
                throw new InvalidOperationException($"bench job {j}: HTTP {(int)resp.StatusCode}: {await resp.Content.ReadAsStringAsync(ct)}");
            var arrivals = new List<double>();
            using var reader = new StreamReader(await resp.Content.ReadAsStreamAsync(ct));
            while (await reader.ReadLineAsync(ct) is { } line)
            {
                if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
                if (line == "data: [DONE]") break;
                var chunk = JsonNode.Parse(line[6..])!;
                if (chunk["error"] is { } e) throw new InvalidOperationException($"bench job {j}: {(string?)e["message"]}");
                int n = chunk["choices"]![0]!["token_ids"]!.AsArray().Count;
                for (int i = 0; i < n; i++) arrivals.Add(clock.Elapsed.TotalMilliseconds);
            }
            return arrivals;
        }));
        return Summarise(times);
    }

    private static Level Summarise(IReadOnlyList<List<double>> times)
    {
        // Steady state: from the moment every job has its first token (all prefills done) to the moment the first
        // job ends (all still running) exactly N jobs decode; count the tokens that arrive in between.
        double from = times.Max(t => t[0]), to = times.Min(t => t[^1]);
        long inWindow = times.Sum(t => (long)t.Count(x => x > from && x <= to));
        double rate;
        if (to > from && inWindow >= times.Count)
            rate = inWindow / ((to - from) / 1000);
        else
        {
            // Degenerate window (jobs did not overlap): all decode tokens over the whole decode span.
            double first = times.Min(t => t[0]), last = times.Max(t => t[^1]);
            rate = last > first ? times.Sum(t => (long)t.Count - 1) / ((last - first) / 1000) : 0;
        }
        var gaps = times.SelectMany(t => t.Zip(t.Skip(1), (a, b) => b - a)).Order().ToArray();
        double Pct(double q) => gaps.Length == 0 ? 0 : gaps[Math.Min(gaps.Length - 1, (int)Math.Ceiling(q * gaps.Length) - 1)];
        return new Level(rate, Pct(0.50), Pct(0.95));
    }
}
