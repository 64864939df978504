using System.CommandLine;
using System.Text.Json;
using Swarm.Cli.Bench;
using Swarm.Engine;
using Swarm.Model;

namespace Swarm.Cli.Commands;

/// <summary><c>swarm bench local|…</c>: benchmarks that print figures and never assert.</summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var cmd = new Command("bench", "Benchmarks (print figures, never assert)");
        cmd.Subcommands.Add(Local());
        cmd.Subcommands.Add(BenchBatchingCommand.Create());
        cmd.Subcommands.Add(SwarmCmd());
        cmd.Subcommands.Add(Recovery());
        cmd.Subcommands.Add(Verify());
        cmd.Subcommands.Add(BenchCoordinatorCommand.Create());
        cmd.Subcommands.Add(Speculative());
        return cmd;
    }

    private static Command Speculative()
    {
        var tokens = new Option<int>("--tokens") { Description = "New tokens per job", DefaultValueFactory = _ => 64 };
        var rtt = new Option<double>("--rtt-ms") { Description = "Emulated round trip between stages, ms", DefaultValueFactory = _ => 50 };
        var maxDraft = new Option<int>("--max-draft") { Description = "Most tokens drafted per pass (k_max)", DefaultValueFactory = _ => 4 };
        var json = new Option<bool>("--json") { Description = "Print JSON" };
        var threads = new Option<int>("--threads") { Description = "CPU threads per node process (0 = all cores)", DefaultValueFactory = _ => 1 };
        var cmd = new Command("speculative", "Tokens per target pass and tokens/s at an emulated WAN RTT: plain vs speculative decoding (ngram, draft=target, codelm-tiny's draft model)");
        cmd.Options.Add(tokens); cmd.Options.Add(rtt); cmd.Options.Add(maxDraft); cmd.Options.Add(json); cmd.Options.Add(threads);
        cmd.SetAction(async (r, ct) =>
        {
            var rep = await SpeculativeBench.RunAsync(r.GetValue(tokens), r.GetValue(rtt), r.GetValue(maxDraft), r.GetValue(threads), m => Console.Error.WriteLine(m), ct);
            double plain = rep.Modes[0].TokensPerSecond;
            if (r.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    model = rep.Model, rtt_ms = rep.RttMs, tokens_per_job = rep.TokensPerJob, prompts = rep.Prompts,
                    modes = rep.Modes.Select(m => new
                    {
                        mode = m.Mode, tokens = m.Tokens, passes = m.Passes, drafted = m.Drafted, accepted = m.Accepted,
                        tokens_per_pass = Math.Round(m.TokensPerPass, 3), tokens_per_s = Math.Round(m.TokensPerSecond, 2),
                        speedup = Math.Round(m.TokensPerSecond / plain, 3), same_as_plain = m.SameAsPlain,
                    }),
                }));
            else
            {
                Console.WriteLine($"{rep.Model}, 2 stages, {rep.Prompts} code prompts × {rep.TokensPerJob} greedy tokens at an emulated {rep.RttMs} ms RTT");
                foreach (var m in rep.Modes)
                    Console.WriteLine($"  {m.Mode,-23}: {m.TokensPerPass,5:F2} tokens/pass ({m.Accepted}/{m.Drafted} drafted accepted), "
                        + $"{m.TokensPerSecond,6:F1} tokens/s ({m.TokensPerSecond / plain:F2}× plain); output same as plain: {m.SameAsPlain}");
            }
            return 0;
        });
        return cmd;
    }

    private static Command SwarmCmd()
    {
        var preset = new Option<string>("--preset") { Description = "Preset", DefaultValueFactory = _ => "pythia-160m" };
        var json = new Option<bool>("--json") { Description = "Print JSON" };
        var threads = new Option<int>("--threads")
        {
            // One job's pipeline runs one stage at a time, so each node gets every core, as the single process it is compared with.
            Description = "CPU threads per node process (0 = every core: one job computes on one stage at a time)", DefaultValueFactory = _ => 0,
        };
        var nat = new Option<bool>("--nat") { Description = "Only a node-to-node hop made directly vs punched vs relayed: set-up, per-token latency, 20 MB throughput" };
        var cmd = new Command("swarm", "Latency through 1, 2 and 4 stages on loopback vs one process; per-hop overhead; WAN transfer");
        cmd.Options.Add(preset); cmd.Options.Add(json); cmd.Options.Add(threads); cmd.Options.Add(nat);
        cmd.SetAction(async (r, ct) =>
        {
            if (r.GetValue(nat)) return await NatBench.RunAsync(r.GetValue(json), m => Console.Error.WriteLine(m), ct);
            TorchRuntime.Initialize(r.GetValue(threads));
            int perNode = r.GetValue(threads) > 0 ? r.GetValue(threads) : Environment.ProcessorCount;
            var report = await SwarmBench.RunAsync(r.GetValue(preset)!, [1, 2, 4], perNode, m => Console.Error.WriteLine(m), ct);
            if (r.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    preset = report.Preset,
                    prompt_tokens = report.PromptTokens,
                    local = new { decode_ms_per_token = Math.Round(report.LocalDecodeMsPerToken, 3), prefill_ms = Math.Round(report.LocalPrefillMs, 2) },
                    stages = report.Swarm.Select(f => new
                    {
                        stages = f.Stages,
                        decode_ms_per_token = Math.Round(f.DecodeMsPerToken, 3),
                        prefill_ms = Math.Round(f.PrefillMs, 2),
                        forward_ms_per_token = Math.Round(f.ForwardMsPerToken, 3),
                        overhead_per_hop_ms = Math.Round(f.OverheadPerHopMs, 3),
                        communication_per_message_ms = Math.Round(f.CommPerMessageMs, 3),
                    }),
                    transfer_20mb_50ms_rtt = report.Transport.Transfers.Select(t => new { channels = t.Channels, mb_per_s = Math.Round(t.MegabytesPerSecond, 2), seconds = Math.Round(t.Seconds, 3) }),
                    loopback_round_trip_us = Math.Round(report.Transport.LoopbackRoundTripMicroseconds, 1),
                    latency_method = report.Transport.LatencyMethod,
                    encryption = Encryption(report),
                }));
                return 0;
            }
            Console.WriteLine($"{report.Preset}: prompt {report.PromptTokens} tokens, greedy decode, f16 wire, loopback");
            Console.WriteLine($"single process: decode {report.LocalDecodeMsPerToken:F2} ms/token, prefill {report.LocalPrefillMs:F1} ms");
            Console.WriteLine($"{"stages",6} {"decode ms/tok",14} {"prefill ms",11} {"forward ms/tok",15} {"overhead/hop ms",16} {"comm/msg ms",12}");
            foreach (var f in report.Swarm)
                Console.WriteLine($"{f.Stages,6} {f.DecodeMsPerToken,14:F2} {f.PrefillMs,11:F1} {f.ForwardMsPerToken,15:F2} {f.OverheadPerHopMs,16:F3} {f.CommPerMessageMs,12:F3}");
            Console.WriteLine("(overhead/hop = (swarm − single process) ÷ (stages + 1) messages per token; comm/msg = (swarm − Σ stage forward) ÷ messages)");
            foreach (var t in report.Transport.Transfers)
                Console.WriteLine($"20 MB at {report.Transport.RttMs} ms RTT over {t.Channels} channel(s): {t.MegabytesPerSecond:F1} MB/s ({t.Seconds:F2} s)");
            Console.WriteLine($"  ({report.Transport.LatencyMethod}); loopback small request/reply: {report.Transport.LoopbackRoundTripMicroseconds:F0} µs");
            var enc = report.Transport.Encryption;
            Console.WriteLine($"encryption: PSK derivation {enc.PskDerivationMs:F0} ms once per process; handshake {enc.HandshakeMs:F2} ms (connect without it {enc.PlainConnectMs:F2} ms); decode-step round trip {enc.StepRoundTripMicroseconds:F0} µs vs {enc.PlainStepRoundTripMicroseconds:F0} µs plain");
            foreach (var f in report.Swarm)
                Console.WriteLine($"  {f.Stages} stage(s): +{report.EncryptionPerToken(f).Ms:F3} ms/token = {report.EncryptionPerToken(f).Percent:F2} % of decode latency");
            Console.WriteLine($"  20 MB on loopback: {enc.Transfer.MegabytesPerSecond:F1} MB/s encrypted vs {enc.PlainTransfer.MegabytesPerSecond:F1} MB/s plain");
            return 0;
        });
        return cmd;
    }

    /// <summary>The encryption figures of <c>bench swarm --json</c>.</summary>
    private static object Encryption(SwarmBench.Report report)
    {
        var enc = report.Transport.Encryption;
        return new
        {
            handshake_ms = Math.Round(enc.HandshakeMs, 3),
            psk_derivation_ms = Math.Round(enc.PskDerivationMs, 1),
            connect_without_handshake_ms = Math.Round(enc.PlainConnectMs, 3),
            step_round_trip_us = new { encrypted = Math.Round(enc.StepRoundTripMicroseconds, 1), plain = Math.Round(enc.PlainStepRoundTripMicroseconds, 1) },
            per_message_us = Math.Round(enc.PerMessageMicroseconds, 2),
            per_token = report.Swarm.Select(f => new
            {
                stages = f.Stages,
                added_ms = Math.Round(report.EncryptionPerToken(f).Ms, 4),
                percent_of_decode = Math.Round(report.EncryptionPerToken(f).Percent, 3),
            }),
            transfer_20mb_loopback = new
            {
                encrypted_mb_per_s = Math.Round(enc.Transfer.MegabytesPerSecond, 2),
                plain_mb_per_s = Math.Round(enc.PlainTransfer.MegabytesPerSecond, 2),
                encrypted_s = Math.Round(enc.Transfer.Seconds, 3),
                plain_s = Math.Round(enc.PlainTransfer.Seconds, 3),
            },
            method = "per_token = (stages + 1) messages × per-message cost (half the difference of a decode step's round trip with and "
                + "without encryption, measured on the transport), against the swarm's measured decode ms/token (which runs encrypted)",
        };
    }

    private static Command Verify()
    {
        var jobs = new Option<int>("--jobs") { Description = "Measured jobs per verify rate", DefaultValueFactory = _ => 24 };
        var tokens = new Option<int>("--tokens") { Description = "New tokens per job", DefaultValueFactory = _ => 32 };
        var json = new Option<bool>("--json") { Description = "Print JSON" };
        var threads = new Option<int>("--threads") { Description = "CPU threads per node process (0 = all cores)", DefaultValueFactory = _ => 1 };
        var cmd = new Command("verify", "Throughput at verify rates 0, 0.05 and 0.2, and the expected jobs until a liar is caught");
        cmd.Options.Add(jobs); cmd.Options.Add(tokens); cmd.Options.Add(json); cmd.Options.Add(threads);
        cmd.SetAction(async (r, ct) =>
        {
            var rep = await VerifyBench.RunAsync(r.GetValue(jobs), r.GetValue(tokens), r.GetValue(threads), m => Console.Error.WriteLine(m), ct);
            double baseline = rep.Throughput[0].TokensPerSecond;
            if (r.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    model = rep.Model, jobs = rep.Jobs, tokens_per_job = rep.TokensPerJob,
                    throughput = rep.Throughput.Select(p => new
                    {
                        verify_rate = p.Rate, tokens_per_s = Math.Round(p.TokensPerSecond, 2),
                        cost = Math.Round(1 - p.TokensPerSecond / baseline, 4), checks_passed = p.ChecksPassed, checks_failed = p.ChecksFailed,
                        checked_fraction = Math.Round(p.CheckedFraction, 4), checks_timed_out = p.ChecksTimedOut, warmup_jobs = p.WarmupJobs,
                        warmup_tokens_per_s = Math.Round(p.WarmupTokensPerSecond, 2),
                        warmup_cost = Math.Round(1 - p.WarmupTokensPerSecond / rep.Throughput[0].WarmupTokensPerSecond, 4), still_on_probation = p.StillOnProbation,
                    }),
                    expected_jobs_until_caught = rep.Catch.Select(c => new { verify_rate = c.Rate, corrupt_fraction = c.Fraction, jobs = Math.Round(c.ExpectedJobs, 1) }),
                }));
            else
            {
                Console.WriteLine($"{rep.Model}, 3 replicas of every layer, {rep.Jobs} jobs × {rep.TokensPerJob} tokens (3 at a time) per rate, "
                    + "measured after a warm-up that ends once no node is on probation (steady state); the warm-up's own figure includes probation");
                foreach (var p in rep.Throughput)
                    Console.WriteLine($"  verify rate {p.Rate,4:0.00}: {p.TokensPerSecond,7:F1} tokens/s (cost {1 - p.TokensPerSecond / baseline,6:P1}); "
                        + $"steps checked {p.CheckedFraction,6:P1} (passes {p.ChecksPassed}, failures {p.ChecksFailed}, shadow timeouts {p.ChecksTimedOut}); "
                        + $"warm-up {p.WarmupJobs} jobs at {p.WarmupTokensPerSecond:F1} tokens/s (cost {1 - p.WarmupTokensPerSecond / rep.Throughput[0].WarmupTokensPerSecond:P1})"
                        + (p.StillOnProbation.Length > 0 ? $"; STILL ON PROBATION: {p.StillOnProbation}" : ""));
                Console.WriteLine($"expected jobs through a liar until it is caught (after probation; {rep.TokensPerJob} checked steps per job):");
                foreach (var c in rep.Catch)
                    Console.WriteLine($"  verify rate {c.Rate,4:0.00}, corrupting {c.Fraction,4:P0} of outputs: {c.ExpectedJobs,6:F1} jobs");
            }
            return 0;
        });
        return cmd;
    }

    private static Command Recovery()
    {
        var preset = new Option<string>("--preset") { Description = "Preset", DefaultValueFactory = _ => "pythia-160m" };
        var deadAfter = new Option<string>("--dead-after") { Description = "Coordinator failure-detection threshold", DefaultValueFactory = _ => "2.5s" };
        var json = new Option<bool>("--json") { Description = "Print JSON" };
        var threads = new Option<int>("--threads") { Description = "CPU threads per node process (0 = the cores shared equally among the node processes)", DefaultValueFactory = _ => 0 };
        var cmd = new Command("recovery", "Time from a node's death to the job's next token, and the throughput dip");
        cmd.Options.Add(preset); cmd.Options.Add(deadAfter); cmd.Options.Add(json); cmd.Options.Add(threads);
        cmd.SetAction(async (r, ct) =>
        {
            TorchRuntime.Initialize(r.GetValue(threads));
            var rep = await RecoveryBench.RunAsync(r.GetValue(preset)!, r.GetValue(deadAfter)!, r.GetValue(threads), m => Console.Error.WriteLine(m), ct);
            if (r.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    preset = rep.Preset, dead_after = rep.DeadAfter,
                    kill_to_next_token_ms = Math.Round(rep.KillToNextTokenMs, 1),
                    tokens_per_s_before = Math.Round(rep.TokensPerSecondBefore, 2),
                    tokens_per_s_recovery_window = Math.Round(rep.TokensPerSecondDuringWindow, 2),
                    tokens_per_s_after = Math.Round(rep.TokensPerSecondAfter, 2),
                    recoveries = rep.Recoveries, output_identical = rep.OutputIdentical,
                }));
            else
            {
                Console.WriteLine($"{rep.Preset}, 2 stages, failure detection after {rep.DeadAfter}: the second-stage node was SIGKILLed mid-job");
                Console.WriteLine($"kill → next token: {rep.KillToNextTokenMs:F0} ms; tokens/s before {rep.TokensPerSecondBefore:F1}, across the recovery window {rep.TokensPerSecondDuringWindow:F1}, after {rep.TokensPerSecondAfter:F1}");
                Console.WriteLine($"recoveries: {rep.Recoveries}; output identical to the failure-free run: {rep.OutputIdentical}");
            }
            return 0;
        });
        return cmd;
    }

    private static Command Local()
    {
        var preset = new Option<string?>("--preset") { Description = "One preset (default: pythia-160m and pythia-410m)" };
        var dtypes = new Option<string>("--dtypes", "--weights")
        {
            Description = "Comma-separated weight formats: f32, f16, bf16, int8 (half and int8 compute in bf16)",
            DefaultValueFactory = _ => "f32,bf16",
        };
        var json = new Option<bool>("--json") { Description = "Print JSON" };
        var threads = new Option<int>("--threads") { Description = "CPU threads (0 = all cores)", DefaultValueFactory = _ => 0 };
        var tp = new Option<int>("--tp") { Description = "Compare tensor parallelism 1, 2, 4, … up to this many shards (f32, CPU; default preset pythia-160m)", DefaultValueFactory = _ => 0 };
        var cmd = new Command("local", "Prefill and decode speed in one process, against the measured roofline");
        cmd.Options.Add(preset); cmd.Options.Add(dtypes); cmd.Options.Add(json); cmd.Options.Add(threads); cmd.Options.Add(tp);
        cmd.SetAction(r =>
        {
            TorchRuntime.Initialize(r.GetValue(threads));
            string? one = r.GetValue(preset);
            if (one is not null && !Presets.All.ContainsKey(one))
                throw new UsageException($"--preset: unknown preset '{one}'; known: {string.Join(", ", Presets.All.Keys)}");
            if (r.GetValue(tp) is var maxTp && maxTp != 0)
            {
                if (maxTp < 1) throw new UsageException("--tp must be ≥ 1");
                string name = one ?? "pythia-160m";
                var figures = LocalBench.RunTensorParallel(name, maxTp, msg => Console.Error.WriteLine(msg));
                PrintTensorParallel(name, figures, r.GetValue(json));
                return 0;
            }
            var presets = one is null ? new[] { "pythia-160m", "pythia-410m" } : new[] { one };
            var dts = r.GetValue(dtypes)!.Split(',', StringSplitOptions.RemoveEmptyEntries)
                .Select(d => CliCommon.ParseWeights(d, "--dtypes")).ToArray();
            bool asJson = r.GetValue(json);
            var report = LocalBench.Run(presets, dts, msg => Console.Error.WriteLine(msg));
            if (asJson) Console.WriteLine(ToJson(report));
            else Print(report);
            return 0;
        });
        return cmd;
    }

    private static void PrintTensorParallel(string preset, List<LocalBench.TpFigure> figures, bool asJson)
    {
        string note = $"All shards here are on the CPU: they share its {Environment.ProcessorCount} cores and one memory bus, so tensor "
            + "parallelism adds no compute or bandwidth on this machine. Differences between the rows come from how the same cores are "
            + "used (tp N runs N single-purpose threads with cores/N intra-op threads each instead of one wide pool; plus a fork-join and "
            + "two all-reduce copies per layer), not from TP's real benefit, which is each shard streaming its 1/N of the weights from its "
            + "own device's memory on a node with several GPUs (--devices cuda:0,cuda:1,…) — not measurable here.";
        if (asJson)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                preset,
                dtype = "f32",
                cores = Environment.ProcessorCount,
                tp = figures.Select(f => new
                {
                    shards = f.Shards,
                    prefill128_tokens_per_s = Math.Round(f.Prefill128, 1),
                    decode_tokens_per_s = Math.Round(f.Decode1, 2),
                    decode_ms_per_token = Math.Round(f.DecodeMsPerToken, 2),
                    layer_weights_per_shard_mb = Math.Round(f.ShardWeightMB, 1),
                }),
                note,
            }));
            return;
        }
        Console.WriteLine($"{preset} f32, {Environment.ProcessorCount} CPU cores, every shard on cpu");
        Console.WriteLine($"{"tp",3} {"prefill 128 tok/s",18} {"decode tok/s",13} {"decode ms/tok",14} {"MB per shard",13}");
        foreach (var f in figures)
            Console.WriteLine($"{f.Shards,3} {f.Prefill128,18:F1} {f.Decode1,13:F2} {f.DecodeMsPerToken,14:F2} {f.ShardWeightMB,13:F1}");
        Console.WriteLine("(MB per shard: the transformer layers' weights one shard holds; embedding and head stay on the first device)");
        Console.WriteLine(note);
    }

    private static void Print(LocalBench.Report r)
    {
        Console.WriteLine($"memory read bandwidth: {r.MemoryBandwidthGBps:F1} GB/s streaming on all cores (libtorch sum {r.LibtorchSumBandwidthGBps:F1})   matmul: {r.MatmulGflopsF32:F0} GFLOP/s f32, {r.MatmulGflopsBf16:F0} GFLOP/s bf16");
        Console.WriteLine($"{"model",-13} {"dtype",-5} {"prefill128",11} {"prefill512",11} {"GFLOP/s512",10} {"of f32 mm",9} {"decode b1",10} {"roofline",9} {"fraction",8} {"b1 libtorch",11} {"decode b8",10}");
        foreach (var v in r.Variants)
            Console.WriteLine($"{v.Preset,-13} {v.Dtype,-5} {v.Prefill128,9:F0}/s {v.Prefill512,9:F0}/s {v.PrefillGflops512,10:F0} {v.PrefillGflops512 / r.MatmulGflopsF32,8:P0} " +
                              $"{v.Decode1,8:F1}/s {v.Roofline,7:F1}/s {v.Fraction,8:P0} {v.Decode1Libtorch,9:F1}/s {v.Decode8,8:F1}/s");
        Console.WriteLine("(tokens/s, best of 3 runs; roofline = bandwidth ÷ weight bytes read per token at batch 1; decode b8 is aggregate over 8 sequences;");
        Console.WriteLine(" b1 libtorch = the same batch-1 decode through libtorch's ops instead of the managed decode step)");
    }

    private static string ToJson(LocalBench.Report r)
    {
        Dictionary<string, Dictionary<string, T>> By<T>(Func<LocalBench.Variant, T> f) =>
            r.Variants.GroupBy(v => v.Preset).ToDictionary(g => g.Key, g => g.ToDictionary(v => v.Dtype, f));
        return JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["memory_bandwidth_gb_per_s"] = Math.Round(r.MemoryBandwidthGBps, 2),
            ["memory_bandwidth_libtorch_sum_gb_per_s"] = Math.Round(r.LibtorchSumBandwidthGBps, 2),
            ["matmul_gflops_f32"] = Math.Round(r.MatmulGflopsF32, 1),
            ["matmul_gflops_bf16"] = Math.Round(r.MatmulGflopsBf16, 1),
            ["prefill_tokens_per_s"] = By(v => new Dictionary<string, double> { ["128"] = Math.Round(v.Prefill128, 1), ["512"] = Math.Round(v.Prefill512, 1) }),
            ["prefill_gflops"] = By(v => Math.Round(v.PrefillGflops512, 1)),
            ["decode_tokens_per_s"] = By(v => new Dictionary<string, double> { ["batch1"] = Math.Round(v.Decode1, 2), ["batch1_libtorch"] = Math.Round(v.Decode1Libtorch, 2), ["batch8"] = Math.Round(v.Decode8, 2) }),
            ["roofline_tokens_per_s"] = By(v => Math.Round(v.Roofline, 2)),
            ["roofline_fraction"] = By(v => Math.Round(v.Fraction, 3)),
            ["weight_mb_per_token"] = By(v => Math.Round(v.WeightMBPerToken, 1)),
        });
    }
}
