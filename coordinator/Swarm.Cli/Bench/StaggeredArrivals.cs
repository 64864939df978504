using System.Diagnostics;
using Swarm.Node;
using Swarm.Protocol;

namespace Swarm.Cli.Bench;

/// <summary>
/// The stall part of <c>swarm bench batching</c>: N concurrent slots on one in-process <see cref="StageHost"/>, each
/// running greedy jobs back to back — a <see cref="PromptTokens"/>-token prompt, then 16 to 47 new tokens (different per
/// job, so jobs end at different times) — so new prompts keep arriving while the other slots decode. The inter-token
/// gaps of the decoding jobs (p50, p95) show whether prefill chunks stall decodes; the aggregate counts every new token
/// over the whole run (prefills included).
/// </summary>
internal static class StaggeredArrivals
{
    /// <summary>Prompt length of every job.</summary>
    public const int PromptTokens = 128;

    /// <param name="Aggregate">New tokens per second over the whole run.</param>
    /// <param name="P50">Median time between consecutive tokens of a job, ms.</param>
    /// <param name="P95">95th percentile of that gap, ms.</param>
    /// <param name="Jobs">Jobs run.</param>
    public sealed record Result(double Aggregate, double P50, double P95, int Jobs);

    private sealed class Job(int slot, int index, long session, long[] prompt, int maxNew)
    {
        public int Slot { get; } = slot;
        public int Index { get; } = index;
        public long Session { get; } = session;
        public long[] Prompt { get; } = prompt;
        public int MaxNew { get; } = maxNew;
        public List<double> Times { get; } = [];
    }

    /// <summary>Runs <paramref name="slots"/> slots of <paramref name="jobsPerSlot"/> jobs each on <paramref name="host"/> (which must hold every layer).</summary>
    public static Result Run(StageHost host, int slots, int jobsPerSlot, int vocab, int seed)
    {
        var route = new[] { new Hop { NodeId = 1, Endpoint = "local", Layers = host.Range } };
        var rng = new Random(seed);
        var jobs = new List<Job>();
        var clock = Stopwatch.StartNew();
        ForwardRequest Step(Job job, int step, long[] input, int start) => new()
        {
            JobId = job.Session, SessionId = job.Session, Step = step, Kind = step == 0 ? StepKind.Prefill : StepKind.Decode,
            StartPosition = start, Input = WireTensor.FromTokenIds(input), Route = route, Sampling = new SamplingParams { Temperature = 0 },
        };
        void Start(int slot, int index)
        {
            var prompt = Enumerable.Range(0, PromptTokens).Select(_ => (long)rng.Next(vocab)).ToArray();
            var job = new Job(slot, index, ((long)seed << 32) + slot * 1000 + index, prompt, 16 + (slot * 7 + index * 13) % 32);
            jobs.Add(job);
            host.Submit(Step(job, 0, prompt, 0), job);
        }
        for (int s = 0; s < slots; s++) Start(s, 0);
        int running = slots;
        while (running > 0)
        {
            foreach (var c in host.RunIteration())
            {
                var job = (Job)c.State!;
                if (c.Output?.Token is not int token)
                    throw new InvalidOperationException($"bench job {job.Session} step {c.Request.Step} failed: {c.Error?.Message}");
                job.Times.Add(clock.Elapsed.TotalMilliseconds);
                int n = job.Times.Count;
                if (n < job.MaxNew)
                {
                    host.Submit(Step(job, n, [token], PromptTokens + n - 1), job);
                    continue;
                }
                host.Close(job.Session);
                if (job.Index + 1 < jobsPerSlot) Start(job.Slot, job.Index + 1);
                else running--;
            }
        }
        double seconds = clock.Elapsed.TotalSeconds;
        var gaps = jobs.SelectMany(j => j.Times.Zip(j.Times.Skip(1), (a, b) => b - a)).Order().ToArray();
        double Pct(double q) => gaps.Length == 0 ? 0 : gaps[Math.Min(gaps.Length - 1, (int)Math.Ceiling(q * gaps.Length) - 1)];
        return new Result(jobs.Sum(j => j.Times.Count) / seconds, Pct(0.50), Pct(0.95), jobs.Count);
    }
}
