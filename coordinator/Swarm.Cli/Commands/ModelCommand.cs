using System.CommandLine;
using Swarm.Checkpoints;
using Swarm.Engine;
using Swarm.Model;

namespace Swarm.Cli.Commands;

/// <summary><c>swarm model init</c>: write a random-weight Pythia-shaped checkpoint in HF layout.</summary>
internal static class ModelCommand
{
    public static Command Create()
    {
        var preset = new Option<string>("--preset") { Description = $"One of: {string.Join(", ", Presets.All.Keys)}", Required = true };
        var outDir = new Option<string>("--out") { Description = "Output folder", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "Storage dtype: f32, f16 or bf16", DefaultValueFactory = _ => "f32" };
        var seed = new Option<long>("--seed") { Description = "RNG seed (same seed, same bytes)", DefaultValueFactory = _ => 1 };
        var init = new Command("init", "Write a random-weight checkpoint for a Pythia size (streams tensor by tensor)");
        init.Options.Add(preset); init.Options.Add(outDir); init.Options.Add(dtype); init.Options.Add(seed);
        init.SetAction((r, ct) =>
        {
            string name = r.GetValue(preset)!;
            if (!Presets.All.ContainsKey(name))
                throw new UsageException($"--preset: unknown preset '{name}'; known: {string.Join(", ", Presets.All.Keys)}");
            var dt = CliCommon.ParseDtype(r.GetValue(dtype)!, "--dtype");
            TorchRuntime.Initialize();
            var progress = new ConsoleProgress($"writing {name}");
            var result = PresetWriter.Write(name, r.GetValue(outDir)!, dt, r.GetValue(seed), progress, cancellationToken: ct);
            Console.WriteLine($"wrote {name} ({PresetWriter.DtypeName(dt)}, {result.TotalBytes / 1e6:F0} MB in {result.WeightFiles.Count} file(s)) to {result.Directory}");
            return Task.FromResult(0);
        });
        var cmd = new Command("model", "Checkpoint tools");
        cmd.Subcommands.Add(init);
        return cmd;
    }
}
