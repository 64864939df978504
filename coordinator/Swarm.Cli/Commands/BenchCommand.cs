using System.CommandLine;
using System.Text.Json;
using Swarm.Cli.Bench;
using Swarm.Engine;
using Swarm.Model;
using static TorchSharp.torch;

namespace Swarm.Cli.Commands;

/// <summary><c>swarm bench local|…</c>: benchmarks that print figures and never assert.</summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var cmd = new Command("bench", "Benchmarks (print figures, never assert)");
        cmd.Subcommands.Add(Local());
        return cmd;
    }

    private static Command Local()
    {
        var preset = new Option<string?>("--preset") { Description = "One preset (default: pythia-160m and pythia-410m)" };
        var dtypes = new Option<string>("--dtypes") { Description = "Comma-separated compute dtypes: f32,bf16", DefaultValueFactory = _ => "f32,bf16" };
        var json = new Option<bool>("--json") { Description = "Print JSON" };
        var threads = new Option<int>("--threads") { Description = "CPU threads (0 = all cores)", DefaultValueFactory = _ => 0 };
        var cmd = new Command("local", "Prefill and decode speed in one process, against the measured roofline");
        cmd.Options.Add(preset); cmd.Options.Add(dtypes); cmd.Options.Add(json); cmd.Options.Add(threads);
        cmd.SetAction(r =>
        {
            TorchRuntime.Initialize(r.GetValue(threads));
            string? one = r.GetValue(preset);
            if (one is not null && !Presets.All.ContainsKey(one))
                throw new UsageException($"--preset: unknown preset '{one}'; known: {string.Join(", ", Presets.All.Keys)}");
            var presets = one is null ? new[] { "pythia-160m", "pythia-410m" } : new[] { one };
            var dts = r.GetValue(dtypes)!.Split(',', StringSplitOptions.RemoveEmptyEntries)
                .Select(d => CliCommon.ParseDtype(d.Trim(), "--dtypes")).ToArray();
            if (dts.Contains(ScalarType.Float16)) throw new UsageException("--dtypes: f16 compute is not supported on CPU (f16 weights are computed in f32)");
            bool asJson = r.GetValue(json);
            var report = LocalBench.Run(presets, dts, msg => Console.Error.WriteLine(msg));
            if (asJson) Console.WriteLine(ToJson(report));
            else Print(report);
            return 0;
        });
        return cmd;
    }

    private static void Print(LocalBench.Report r)
    {
        Console.WriteLine($"memory read bandwidth: {r.MemoryBandwidthGBps:F1} GB/s   matmul: {r.MatmulGflopsF32:F0} GFLOP/s f32, {r.MatmulGflopsBf16:F0} GFLOP/s bf16");
        Console.WriteLine($"{"model",-13} {"dtype",-5} {"prefill128",11} {"prefill512",11} {"GFLOP/s512",10} {"of f32 mm",9} {"decode b1",10} {"roofline",9} {"fraction",8} {"decode b8",10}");
        foreach (var v in r.Variants)
            Console.WriteLine($"{v.Preset,-13} {v.Dtype,-5} {v.Prefill128,9:F0}/s {v.Prefill512,9:F0}/s {v.PrefillGflops512,10:F0} {v.PrefillGflops512 / r.MatmulGflopsF32,8:P0} " +
                              $"{v.Decode1,8:F1}/s {v.Roofline,7:F1}/s {v.Fraction,8:P0} {v.Decode8,8:F1}/s");
        Console.WriteLine("(tokens/s; roofline = bandwidth ÷ weight bytes read per token at batch 1; decode b8 is aggregate over 8 sequences)");
    }

    private static string ToJson(LocalBench.Report r)
    {
        Dictionary<string, Dictionary<string, T>> By<T>(Func<LocalBench.Variant, T> f) =>
            r.Variants.GroupBy(v => v.Preset).ToDictionary(g => g.Key, g => g.ToDictionary(v => v.Dtype, f));
        return JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["memory_bandwidth_gb_per_s"] = Math.Round(r.MemoryBandwidthGBps, 2),
            ["matmul_gflops_f32"] = Math.Round(r.MatmulGflopsF32, 1),
            ["matmul_gflops_bf16"] = Math.Round(r.MatmulGflopsBf16, 1),
            ["prefill_tokens_per_s"] = By(v => new Dictionary<string, double> { ["128"] = Math.Round(v.Prefill128, 1), ["512"] = Math.Round(v.Prefill512, 1) }),
            ["prefill_gflops"] = By(v => Math.Round(v.PrefillGflops512, 1)),
            ["decode_tokens_per_s"] = By(v => new Dictionary<string, double> { ["batch1"] = Math.Round(v.Decode1, 2), ["batch8"] = Math.Round(v.Decode8, 2) }),
            ["roofline_tokens_per_s"] = By(v => Math.Round(v.Roofline, 2)),
            ["roofline_fraction"] = By(v => Math.Round(v.Fraction, 3)),
            ["weight_mb_per_token"] = By(v => Math.Round(v.WeightMBPerToken, 1)),
        });
    }
}
