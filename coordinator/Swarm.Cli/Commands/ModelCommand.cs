using System.CommandLine;
using Swarm.Checkpoints;
using Swarm.Engine;
using Swarm.Model;
using Swarm.Weights;

namespace Swarm.Cli.Commands;

/// <summary>
/// <c>swarm model init</c>: write a random-weight Pythia-shaped checkpoint in HF layout.
/// <c>swarm model pull</c>: download one layer range of a hub-style repository as a loadable checkpoint folder.
/// <c>swarm model manifest</c>: compute (once) the per-tensor SHA-256 manifest a pull verifies against.
/// </summary>
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
        cmd.Subcommands.Add(CreatePull());
        cmd.Subcommands.Add(CreateManifest());
        return cmd;
    }

    private static Command CreatePull()
    {
        var url = new Option<string>("--url") { Description = "Repository URL (https://HOST/ORG/NAME) or its …/resolve/REV", Required = true };
        var revision = new Option<string?>("--revision") { Description = "Branch, tag or commit (default main)" };
        var layers = new Option<string>("--layers") { Description = "Layers A:B (half-open) to download", Required = true };
        var outDir = new Option<string>("--out") { Description = "Output folder", Required = true };
        var manifest = new Option<string?>("--manifest") { Description = "Tensor manifest to verify against (default: the cached one, if any)" };
        var mirrors = new Option<string[]>("--mirror") { Description = "Another server with the same files, tried when the URL fails (repeatable)" };
        var parallel = new Option<int>("--parallel") { Description = "Tensors downloaded at once", DefaultValueFactory = _ => 4 };
        var pull = new Command("pull", "Download only the tensors of layers A:B (plus embedding / head at the ends) as a checkpoint folder; resumable");
        pull.Options.Add(url); pull.Options.Add(revision); pull.Options.Add(layers); pull.Options.Add(outDir);
        pull.Options.Add(manifest); pull.Options.Add(mirrors); pull.Options.Add(parallel);
        pull.SetAction(async (r, ct) =>
        {
            string? rev = r.GetValue(revision);
            var source = ParseSource(r.GetValue(url)!, rev, "--url");
            var mirrorSources = (r.GetValue(mirrors) ?? []).Select(m => ParseSource(m, source.Revision, "--mirror")).ToArray();
            string range = r.GetValue(layers)!;
            var parts = range.Split(':');
            if (parts.Length != 2 || !int.TryParse(parts[0], out int a) || !int.TryParse(parts[1], out int b) || a < 0 || b <= a)
                throw new UsageException($"--layers: '{range}' is not A:B with 0 ≤ A < B");
            if (r.GetValue(parallel) < 1) throw new UsageException("--parallel must be ≥ 1");
            var cache = new WeightCache();
            var given = r.GetValue(manifest) is { } path ? TensorManifest.Load(path) : null;
            if (given is null && cache.LoadManifest(source.Key) is null)
                Console.Error.WriteLine($"note: no tensor manifest for {source.Key}: tensors are checked for length only. " +
                                        "Run `swarm model manifest` once (it reads the whole checkpoint) or pass --manifest FILE to verify them.");
            using var http = HttpRangeReader.CreateHttpClient();
            var puller = new StageCheckpointPuller(new HttpRangeReader(http), cache);
            var result = await puller.PullAsync(new StagePullRequest
            {
                Source = source, Start = a, End = b, OutDir = r.GetValue(outDir)!, Mirrors = mirrorSources, Manifest = given,
                Parallelism = r.GetValue(parallel),
            }, new ConsoleProgress($"layers {a}:{b}"), ct);
            Console.WriteLine($"pulled layers {a}:{b} of {source.Key} into {result.Directory}: {result.TensorCount} tensors, " +
                              $"{result.TensorBytes / 1e6:F1} MB ({result.BytesDownloaded / 1e6:F1} MB downloaded, the rest from {cache.Root}); " +
                              (result.Verified ? "every tensor verified against the manifest" : "not verified (no manifest)"));
            return 0;
        });
        return pull;
    }

    private static Command CreateManifest()
    {
        var url = new Option<string>("--url") { Description = "Repository URL (https://HOST/ORG/NAME) or its …/resolve/REV", Required = true };
        var revision = new Option<string?>("--revision") { Description = "Branch, tag or commit (default main)" };
        var outFile = new Option<string?>("--out") { Description = "Also write the manifest to this file" };
        var cmd = new Command("manifest", "Compute the per-tensor SHA-256 manifest of a repository revision (reads every tensor once) and cache it");
        cmd.Options.Add(url); cmd.Options.Add(revision); cmd.Options.Add(outFile);
        cmd.SetAction(async (r, ct) =>
        {
            var source = ParseSource(r.GetValue(url)!, r.GetValue(revision), "--url");
            using var http = HttpRangeReader.CreateHttpClient();
            var reader = new HttpRangeReader(http);
            var remote = await RemoteCheckpoint.OpenAsync(source, reader, ct);
            var manifest = await TensorManifestBuilder.BuildAsync(remote, reader, new ConsoleProgress("hashing tensors"), ct: ct);
            var cache = new WeightCache();
            cache.SaveManifest(manifest);
            if (r.GetValue(outFile) is { } path) WeightCache.WriteAtomically(path, System.Text.Encoding.UTF8.GetBytes(manifest.ToJson()));
            Console.WriteLine($"manifest of {source.Key}: {manifest.Tensors.Count} tensors, cached at {cache.ManifestPath(source.Key)}");
            return 0;
        });
        return cmd;
    }

    private static ModelSource ParseSource(string url, string? revision, string flag)
    {
        try { return ModelSource.Parse(url, revision); }
        catch (ArgumentException e) { throw new UsageException($"{flag}: {e.Message}"); }
    }
}
