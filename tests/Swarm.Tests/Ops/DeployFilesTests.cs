using System.Diagnostics;
using Microsoft.Extensions.Configuration;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Swarm.Cli.Commands;
using Swarm.Coordinator.Status;
using Swarm.Coordinator.Service;
using Swarm.Protocol;
using Xunit;
using Xunit.Abstractions;
using YamlDotNet.RepresentationModel;

namespace Swarm.Tests.Ops;

/// <summary>
/// No Docker engine or systemd runs in CI: these tests check that the files in <c>deploy/</c> parse, agree with each
/// other and refer to things that exist in the repository, and that every configuration option is documented.
/// </summary>
public sealed partial class DeployFilesTests(ITestOutputHelper output)
{
    private static readonly string s_repo = TestArtifacts.RepoRoot();
    private static readonly string s_deploy = Path.Combine(s_repo, "deploy");

    // ---------- helpers ----------

    private static YamlMappingNode LoadYaml(string file)
    {
        string path = Path.Combine(s_deploy, file);
        Assert.True(File.Exists(path), $"{path} is missing");
        var stream = new YamlStream();
        using (var reader = new StreamReader(path)) stream.Load(reader);
        Assert.Single(stream.Documents);
        return Assert.IsType<YamlMappingNode>(stream.Documents[0].RootNode);
    }

    private static YamlNode? Get(YamlMappingNode map, string key) =>
        map.Children.TryGetValue(new YamlScalarNode(key), out var v) ? v : null;

    private static YamlMappingNode Map(YamlMappingNode map, string key) =>
        Get(map, key) as YamlMappingNode ?? throw new Xunit.Sdk.XunitException($"'{key}' is missing or not a mapping");

    private static string Scalar(YamlNode? node, string what) =>
        (node as YamlScalarNode)?.Value ?? throw new Xunit.Sdk.XunitException($"{what} is missing or not a scalar");

    private static List<string> Sequence(YamlNode? node, string what) =>
        (node as YamlSequenceNode)?.Children.Select(c => Scalar(c, what)).ToList() ?? throw new Xunit.Sdk.XunitException($"{what} is missing or not a list");

    private static string? FlagValue(IReadOnlyList<string> args, string flag)
    {
        int i = args.ToList().IndexOf(flag);
        return i >= 0 && i + 1 < args.Count ? args[i + 1] : null;
    }

    private static IEnumerable<string> Flags(IEnumerable<string> args) => args.Where(a => a.StartsWith("--", StringComparison.Ordinal)).Select(a => a.Split('=')[0]);

    private sealed record OptionRow(string Key, string Flag, string Env, string Default, string Meaning);

    /// <summary>The options table of deploy/README.md.</summary>
    private static List<OptionRow> DocumentedOptions()
    {
        var rows = new List<OptionRow>();
        foreach (string line in File.ReadLines(Path.Combine(s_deploy, "README.md")))
        {
            var m = OptionRowRegex().Match(line);
            if (!m.Success) continue;
            rows.Add(new OptionRow(m.Groups["key"].Value, m.Groups["flag"].Value, m.Groups["env"].Value, m.Groups["def"].Value.Trim(), m.Groups["meaning"].Value.Trim()));
        }
        Assert.True(rows.Count > 10, "deploy/README.md has no options table (rows like | `Node:Name` | `--name` | `SWARM_NODE__NAME` | default | meaning |)");
        return rows;
    }

    [GeneratedRegex(@"^\| `(?<key>[A-Za-z:]+)` \| `(?<flag>--[a-z-]+)` \| `(?<env>SWARM_[A-Z_]+)` \| (?<def>[^|]+) \| (?<meaning>[^|]+) \|$")]
    private static partial Regex OptionRowRegex();

    /// <summary>Flags documented for <paramref name="role"/> (<c>Coordinator</c> or <c>Node</c>), plus the shared ones.</summary>
    private static HashSet<string> FlagsOf(string role) =>
        [.. DocumentedOptions().Where(r => r.Key.StartsWith(role + ":", StringComparison.Ordinal) || !r.Key.Contains(':')).Select(r => r.Flag), "--config"];

    private static void AssertDocumented(string where, string role, IEnumerable<string> args)
    {
        var unknown = Flags(args).Except(FlagsOf(role)).ToList();
        Assert.True(unknown.Count == 0, $"{where} uses flags not documented for {role} in deploy/README.md: {string.Join(", ", unknown)}");
    }

    private static Dictionary<string, YamlMappingNode> Services() =>
        Map(LoadYaml("compose.yaml"), "services").Children.ToDictionary(kv => Scalar(kv.Key, "service name"), kv => (YamlMappingNode)kv.Value);

    // ---------- compose.yaml ----------

    [Fact]
    public void Compose_Services_CoordinatorThreeNodesPrometheus()
    {
        var services = Services();
        foreach (string name in new[] { "coordinator", "node-1", "node-2", "node-3", "prometheus", "model-init" })
            Assert.True(services.ContainsKey(name), $"compose.yaml has no service '{name}'; it has {string.Join(", ", services.Keys)}");

        var root = LoadYaml("compose.yaml");
        var declared = Map(root, "volumes").Children.Keys.Select(k => Scalar(k, "volume")).ToHashSet();
        foreach (var (name, svc) in services)
        {
            if (Get(svc, "volumes") is not YamlSequenceNode volumes) continue;
            foreach (string v in volumes.Children.Select(c => Scalar(c, $"{name} volume")))
            {
                string source = v.Split(':')[0];
                if (source.StartsWith('.') || source.StartsWith('/'))
                    Assert.True(File.Exists(Path.Combine(s_deploy, source)) || Directory.Exists(Path.Combine(s_deploy, source)),
                        $"service {name} mounts {source}, which does not exist next to compose.yaml");
                else
                    Assert.True(declared.Contains(source), $"service {name} uses volume '{source}', not declared under top-level volumes:");
            }
        }
        // The nodes and the coordinator share the model volume.
        Assert.All(new[] { "coordinator", "node-1", "node-2", "node-3", "model-init" },
            n => Assert.Contains(Sequence(Get(services[n], "volumes"), $"{n} volumes"), v => v.StartsWith("models:/models", StringComparison.Ordinal)));
    }

    [Fact]
    public void Compose_SwarmServices_UseTheRepoImageAndDocumentedFlags()
    {
        var services = Services();
        var build = Map(services["model-init"], "build");
        string context = Path.GetFullPath(Path.Combine(s_deploy, Scalar(Get(build, "context"), "build.context")));
        Assert.True(File.Exists(Path.Combine(context, "Swarm.sln")), $"build context {context} is not the repository root");
        Assert.True(File.Exists(Path.Combine(context, Scalar(Get(build, "dockerfile"), "build.dockerfile"))), "build.dockerfile does not exist");
        string image = Scalar(Get(services["model-init"], "image"), "model-init image");

        // The coordinator runs its own image (swarm-coordinator: no engine), whose entry point is the coordinator command.
        var coordinator = Sequence(Get(services["coordinator"], "command"), "coordinator command");
        Assert.Equal("coordinator", Scalar(Get(Map(services["coordinator"], "build"), "target"), "coordinator build.target"));
        Assert.Equal("swarm-coordinator:local", Scalar(Get(services["coordinator"], "image"), "coordinator image"));
        Assert.Empty(CoordinatorCommand.Create().Parse(coordinator.ToArray()).Errors);
        AssertDocumented("compose.yaml coordinator", "Coordinator", coordinator);
        string listenPort = FlagValue(coordinator, "--listen")!.Split(':')[^1];
        Assert.Equal("f16", FlagValue(coordinator, "--wire-dtype"));

        var names = new HashSet<string>();
        foreach (string node in new[] { "node-1", "node-2", "node-3" })
        {
            var cmd = Sequence(Get(services[node], "command"), $"{node} command");
            Assert.Equal("node", cmd[0]);
            Assert.Equal(image, Scalar(Get(services[node], "image"), $"{node} image"));
            AssertDocumented($"compose.yaml {node}", "Node", cmd);
            Assert.Equal($"coordinator:{listenPort}", FlagValue(cmd, "--coordinator"));
            Assert.Equal(FlagValue(coordinator, "--model"), FlagValue(cmd, "--model"));
            Assert.True(names.Add(FlagValue(cmd, "--name")!), $"{node}: --name is not unique");
            Assert.Equal(node, FlagValue(cmd, "--advertise")!.Split(':')[0]);
            Assert.Equal(FlagValue(cmd, "--listen")!.Split(':')[1], FlagValue(cmd, "--advertise")!.Split(':')[1]);
            Assert.Equal("swarm.env", Scalar(Get(services[node], "env_file"), $"{node} env_file"));
        }
        Assert.Equal("swarm.env", Scalar(Get(services["coordinator"], "env_file"), "coordinator env_file"));
    }

    [Fact]
    public void Compose_ModelInitAndHealthcheck_ParseWithTheRealCommands()
    {
        var services = Services();
        var init = Sequence(Get(services["model-init"], "command"), "model-init command");
        var parsed = ModelCommand.Create().Parse(init.Skip(1).ToArray());
        Assert.Equal("model", init[0]);
        Assert.Empty(parsed.Errors);
        Assert.True(Swarm.Model.Presets.All.ContainsKey(FlagValue(init, "--preset")!), $"unknown preset {FlagValue(init, "--preset")}");
        Assert.Equal(FlagValue(Sequence(Get(services["coordinator"], "command"), "c"), "--model"), FlagValue(init, "--out"));

        var test = Sequence(Get(Map(services["coordinator"], "healthcheck"), "test"), "healthcheck test");
        Assert.Equal(["CMD", "/app/swarm-coordinator", "status"], test.Take(3));
        Assert.Empty(StatusCommand.Create().Parse(test.Skip(3).ToArray()).Errors);
        string httpPort = FlagValue(Sequence(Get(services["coordinator"], "command"), "c"), "--http")!.Split(':')[1];
        Assert.EndsWith(":" + httpPort, FlagValue(test, "--url"));
    }

    [Fact]
    public void Compose_EnvFile_HasAnExampleWithTheSecret()
    {
        string example = Path.Combine(s_deploy, "swarm.env.example");
        Assert.True(File.Exists(example), "deploy/swarm.env.example is missing (compose's env_file: swarm.env is copied from it)");
        Assert.Contains(File.ReadAllLines(example), l => l.StartsWith("SWARM_SECRET=", StringComparison.Ordinal));
        Assert.Contains("swarm.env", File.ReadAllText(Path.Combine(s_deploy, ".gitignore")));
    }

    // ---------- prometheus.yml ----------

    [Fact]
    public void Prometheus_ScrapesTheCoordinatorAndEveryNodeOfCompose()
    {
        var prom = LoadYaml("prometheus.yml");
        var jobs = ((YamlSequenceNode)Get(prom, "scrape_configs")!).Children.Cast<YamlMappingNode>()
            .ToDictionary(j => Scalar(Get(j, "job_name"), "job_name"));
        var targets = jobs.ToDictionary(j => j.Key, j => ((YamlSequenceNode)Get(j.Value, "static_configs")!).Children.Cast<YamlMappingNode>()
            .SelectMany(sc => Sequence(Get(sc, "targets"), "targets")).ToList());
        Assert.All(jobs.Values, j => Assert.Equal("/metrics", Scalar(Get(j, "metrics_path"), "metrics_path")));

        var services = Services();
        string http = FlagValue(Sequence(Get(services["coordinator"], "command"), "c"), "--http")!;
        Assert.Equal([$"coordinator:{http.Split(':')[1]}"], targets["swarm-coordinator"]);
        var expectedNodes = new[] { "node-1", "node-2", "node-3" }
            .Select(n => $"{n}:{FlagValue(Sequence(Get(services[n], "command"), n), "--metrics-port")}");
        Assert.Equal(expectedNodes, targets["swarm-nodes"]);
        TimeSpan interval = ParsePromDuration(Scalar(Get(Map(prom, "global"), "scrape_interval"), "scrape_interval"));
        TimeSpan timeout = ParsePromDuration(Scalar(Get(Map(prom, "global"), "scrape_timeout"), "scrape_timeout"));
        Assert.True(timeout <= interval, "Prometheus refuses scrape_timeout > scrape_interval");
        Assert.Contains("./prometheus.yml:/etc/prometheus/prometheus.yml:ro", Sequence(Get(services["prometheus"], "volumes"), "prometheus volumes"));

        // CI installs Debian's prometheus package (for `promtool check metrics`); then the real checker reads the file too.
        var check = RunIfInstalled("promtool", "check", "config", Path.Combine(s_deploy, "prometheus.yml"));
        if (check is { } c) Assert.True(c.ExitCode == 0, $"promtool check config deploy/prometheus.yml failed:\n{c.Output}");
    }

    private static TimeSpan ParsePromDuration(string text)
    {
        var m = Regex.Match(text, "^([0-9]+)(ms|s|m|h)$");
        Assert.True(m.Success, $"'{text}' is not a Prometheus duration");
        double v = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        return m.Groups[2].Value switch { "ms" => TimeSpan.FromMilliseconds(v), "s" => TimeSpan.FromSeconds(v), "m" => TimeSpan.FromMinutes(v), _ => TimeSpan.FromHours(v) };
    }

    // ---------- Dockerfile ----------

    private static List<(string Instruction, string Args)> DockerInstructions()
    {
        var lines = File.ReadAllLines(Path.Combine(s_deploy, "Dockerfile"));
        var result = new List<(string, string)>();
        string pending = "";
        foreach (string raw in lines)
        {
            string line = raw.TrimEnd();
            if (pending.Length == 0 && (line.TrimStart().StartsWith('#') || line.Trim().Length == 0)) continue;
            if (line.EndsWith('\\')) { pending += line[..^1] + " "; continue; }
            string full = (pending + line).Trim();
            pending = "";
            int sp = full.IndexOf(' ');
            result.Add((full[..sp].ToUpperInvariant(), full[(sp + 1)..].Trim()));
        }
        return result;
    }

    [Fact]
    public void Dockerfile_CopySourcesExist_TwoNonRootAspNetImages_CoordinatorWithoutTheEngine()
    {
        var ins = DockerInstructions();
        var froms = ins.Where(i => i.Instruction == "FROM").Select(i => i.Args).ToList();
        Assert.Equal(3, froms.Count);
        Assert.StartsWith("mcr.microsoft.com/dotnet/sdk:${DOTNET_VERSION} AS build", froms[0]);
        Assert.Equal("mcr.microsoft.com/dotnet/aspnet:${DOTNET_VERSION} AS coordinator", froms[1]);
        Assert.Equal("mcr.microsoft.com/dotnet/aspnet:${DOTNET_VERSION} AS runtime", froms[2]);
        Assert.Contains(ins, i => i.Instruction == "ARG" && i.Args == "DOTNET_VERSION=10.0");

        foreach (var (_, args) in ins.Where(i => i.Instruction == "COPY" && !i.Args.StartsWith("--from", StringComparison.Ordinal)))
        {
            var parts = args.Split(' ', StringSplitOptions.RemoveEmptyEntries).Where(p => !p.StartsWith("--", StringComparison.Ordinal)).ToArray();
            foreach (string source in parts[..^1])
                Assert.True(File.Exists(Path.Combine(s_repo, source)) || Directory.Exists(Path.Combine(s_repo, source)),
                    $"Dockerfile copies '{source}', which is not in the repository");
        }
        // Every project of the solution has its project file copied before the restore (else the restore misses it).
        foreach (string csproj in Directory.GetFiles(s_repo, "*.csproj", SearchOption.AllDirectories)
                     .Select(p => Path.GetRelativePath(s_repo, p).Replace('\\', '/'))
                     .Where(p => (p.StartsWith("shared/", StringComparison.Ordinal) || p.StartsWith("node/", StringComparison.Ordinal) || p.StartsWith("coordinator/", StringComparison.Ordinal))
                                 && !p.Contains("/bin/", StringComparison.Ordinal) && !p.Contains("/obj/", StringComparison.Ordinal)))
            Assert.Contains(ins, i => i.Instruction == "COPY" && i.Args.StartsWith(csproj + " ", StringComparison.Ordinal));

        string publish = ins.Single(i => i.Instruction == "RUN" && i.Args.Contains("dotnet publish", StringComparison.Ordinal)).Args;
        var published = Regex.Matches(publish, @"dotnet publish (\S+) .*?-o (\S+)").Select(m => (Project: m.Groups[1].Value, Out: m.Groups[2].Value)).ToList();
        Assert.Equal(2, published.Count);
        var expected = new[] { ("swarm-coordinator", "/coordinator"), ("swarm", "/app") };
        foreach (var ((project, output), (assembly, dir)) in published.Zip(expected))
        {
            Assert.True(File.Exists(Path.Combine(s_repo, project)), $"the published project {project} does not exist");
            Assert.Contains($"<AssemblyName>{assembly}</AssemblyName>", File.ReadAllText(Path.Combine(s_repo, project)));
            Assert.Equal(dir, output);
        }
        // The coordinator image's program references no engine (its closure is checked in DependencyTests).
        Assert.DoesNotContain("Swarm.Inference", File.ReadAllText(Path.Combine(s_repo, published[0].Project)));

        var stages = ins.Select((i, n) => (i, n)).Where(x => x.i.Instruction == "FROM").Select(x => x.n).ToList();
        foreach (var (start, end, from, entry) in new[] { (stages[1], stages[2], "/coordinator", "/app/swarm-coordinator"), (stages[2], ins.Count, "/app", "/app/swarm") })
        {
            var stage = ins.Skip(start).Take(end - start).ToList();
            Assert.Contains(stage, i => i.Instruction == "COPY" && i.Args == $"--from=build {from} ./");
            string user = stage.Last(i => i.Instruction == "USER").Args;
            Assert.DoesNotMatch("^(root|0)(:.*)?$", user);
            Assert.Equal($"[\"{entry}\"]", stage.Single(i => i.Instruction == "ENTRYPOINT").Args);
            Assert.True(stage.FindIndex(i => i.Instruction == "USER") > stage.FindIndex(i => i.Instruction == "RUN"), "USER must come after the last RUN of each final stage");
        }

        // Every COPY source must also survive the Dockerfile-specific ignore file.
        var ignored = File.ReadAllLines(Path.Combine(s_deploy, "Dockerfile.dockerignore")).Where(l => l.Length > 0 && !l.StartsWith('#')).ToList();
        Assert.DoesNotContain("shared/", ignored);
        Assert.DoesNotContain("coordinator/", ignored);
        Assert.DoesNotContain("build/", ignored);
    }

    // ---------- systemd ----------

    private static Dictionary<string, List<(string Key, string Value)>> LoadUnit(string name)
    {
        var sections = new Dictionary<string, List<(string, string)>>();
        List<(string, string)>? current = null;
        foreach (string raw in File.ReadAllLines(Path.Combine(s_deploy, "systemd", name)))
        {
            string line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#') || line.StartsWith(';')) continue;
            if (line.StartsWith('[') && line.EndsWith(']')) { current = sections[line[1..^1]] = []; continue; }
            Assert.True(current is not null, $"{name}: '{line}' is outside any section");
            int eq = line.IndexOf('=');
            Assert.True(eq > 0, $"{name}: '{line}' is not key=value");
            current!.Add((line[..eq], line[(eq + 1)..]));
        }
        return sections;
    }

    [Theory]
    [InlineData("swarm-coordinator.service", "coordinator", "Coordinator")]
    [InlineData("swarm-node.service", "node", "Node")]
    public void SystemdUnit_RunsThePublishedCliHardenedWithRestartAndEnvironmentFile(string unit, string subcommand, string role)
    {
        var u = LoadUnit(unit);
        Assert.Equal(["Unit", "Service", "Install"], u.Keys);
        string Value(string section, string key) =>
            u[section].LastOrDefault(kv => kv.Key == key).Value ?? throw new Xunit.Sdk.XunitException($"{unit}: [{section}] {key}= is missing");

        var exec = Value("Service", "ExecStart").Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(Path.IsPathRooted(exec[0]), $"{unit}: ExecStart must start with an absolute path");
        Assert.Equal("swarm", Path.GetFileName(exec[0]));
        string readme = File.ReadAllText(Path.Combine(s_deploy, "README.md"));
        Assert.Contains($"dotnet publish coordinator/Swarm.Cli/Swarm.Cli.csproj -c Release -o {Path.GetDirectoryName(exec[0])}", readme);
        Assert.Equal(subcommand, exec[1]);
        AssertDocumented($"{unit} ExecStart", role, exec);
        Assert.Contains(Value("Service", "EnvironmentFile").TrimStart('-'), readme);
        Assert.Contains(FlagValue(exec, "--config")!, readme);

        Assert.Equal("on-failure", Value("Service", "Restart"));
        Assert.NotEqual("root", Value("Service", "User"));
        foreach (var (key, expected) in new[]
        {
            ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
            ("PrivateDevices", "yes"), ("RestrictSUIDSGID", "yes"), ("CapabilityBoundingSet", ""), ("ProtectKernelModules", "yes"),
        })
            Assert.True(Value("Service", key) == expected, $"{unit}: {key}= should be '{expected}'");
        Assert.DoesNotContain(u["Service"], kv => kv.Key == "MemoryDenyWriteExecute" && kv.Value == "yes"); // the JIT needs W+X pages
        Assert.Equal("multi-user.target", Value("Install", "WantedBy"));
        Assert.Equal("network-online.target", Value("Unit", "Wants"));

        VerifyWithSystemdAnalyze(unit);
    }

    /// <summary>
    /// Where systemd is installed, <c>systemd-analyze verify</c> also checks every directive; its only allowed complaint
    /// is that the ExecStart binary is not installed on this machine.
    /// </summary>
    private void VerifyWithSystemdAnalyze(string unit)
    {
        if (RunIfInstalled("systemd-analyze", "verify", Path.Combine(s_deploy, "systemd", unit)) is not { } run) return;
        var complaints = run.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(l => !l.Contains("is not executable: No such file or directory", StringComparison.Ordinal)).ToList();
        output.WriteLine($"systemd-analyze verify {unit}: {(complaints.Count == 0 ? "ok" : string.Join(" / ", complaints))}");
        Assert.True(complaints.Count == 0, $"systemd-analyze verify {unit}:\n{string.Join('\n', complaints)}");
    }

    /// <summary>Runs <paramref name="tool"/> when it is on PATH; null (and a note in the test output) when it is not.</summary>
    private (int ExitCode, string Output)? RunIfInstalled(string tool, params string[] args)
    {
        string? path = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator).Select(d => Path.Combine(d, tool)).FirstOrDefault(File.Exists);
        if (path is null)
        {
            output.WriteLine($"{tool} is not installed: structural checks only");
            return null;
        }
        var psi = new ProcessStartInfo(path) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (string a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        string text = stderr.Result + stdout;
        output.WriteLine($"{tool} {string.Join(' ', args)} → exit {p.ExitCode}");
        return (p.ExitCode, text);
    }

    // ---------- swarm.example.json ----------

    private static Dictionary<string, JsonElement> ExampleLeaves()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(s_deploy, "swarm.example.json")));
        var leaves = new Dictionary<string, JsonElement>();
        void Walk(JsonElement e, string prefix)
        {
            if (e.ValueKind == JsonValueKind.Object)
                foreach (var p in e.EnumerateObject()) Walk(p.Value, prefix.Length == 0 ? p.Name : prefix + ":" + p.Name);
            else leaves[prefix] = e.Clone();
        }
        Walk(doc.RootElement, "");
        return leaves;
    }

    [Fact]
    public void ExampleConfig_EveryOptionDocumented_AndEveryDocumentedOptionInTheExample()
    {
        var leaves = ExampleLeaves();
        var rows = DocumentedOptions();
        var documented = rows.Select(r => r.Key).ToList();

        Assert.Equal(documented.Count, documented.Distinct().Count());
        var undocumented = leaves.Keys.Except(documented).ToList();
        Assert.True(undocumented.Count == 0, $"swarm.example.json options missing from the deploy/README.md table: {string.Join(", ", undocumented)}");
        var missing = documented.Except(leaves.Keys).ToList();
        Assert.True(missing.Count == 0, $"deploy/README.md documents options that swarm.example.json lacks: {string.Join(", ", missing)}");
        foreach (var r in rows)
        {
            Assert.Equal("SWARM_" + r.Key.ToUpperInvariant().Replace(":", "__", StringComparison.Ordinal), r.Env);
            Assert.True(r.Meaning.Length > 15, $"{r.Key}: meaning '{r.Meaning}' says too little");
            Assert.NotEmpty(r.Default);
        }
        // Flags are unique within a role.
        foreach (string role in new[] { "Coordinator", "Node" })
        {
            var flags = rows.Where(r => r.Key.StartsWith(role + ":", StringComparison.Ordinal) || !r.Key.Contains(':')).Select(r => r.Flag).ToList();
            Assert.Equal(flags.Count, flags.Distinct().Count());
        }
        // What operators were promised they can set.
        string[] required =
        [
            "Secret", "Node:Coordinator", "Node:Model", "Node:Layers", "Node:Memory", "Node:Threads", "Node:Tp", "Node:Name", "Node:Listen",
            "Node:MetricsPort", "Coordinator:Listen", "Coordinator:Http", "Coordinator:Model", "Coordinator:WireDtype",
            "Coordinator:MaxConcurrentJobs", "Coordinator:QueueTimeout", "Coordinator:HeartbeatInterval", "Coordinator:SuspectAfter",
            "Coordinator:DeadAfter", "Coordinator:OtlpEndpoint",
        ];
        Assert.Empty(required.Except(leaves.Keys));
    }

    [Fact]
    public void ExampleConfig_ValuesAreWellFormed()
    {
        var leaves = ExampleLeaves();
        string S(string key) => leaves[key].GetString()!;

        Assert.Contains(S("Coordinator:WireDtype"), new[] { "f16", "f32" });
        foreach (string key in new[] { "Coordinator:QueueTimeout", "Coordinator:HeartbeatInterval", "Coordinator:SuspectAfter", "Coordinator:DeadAfter" })
            Assert.True(TimeSpan.TryParse(S(key), CultureInfo.InvariantCulture, out var t) && t > TimeSpan.Zero, $"{key}: '{S(key)}' is not a positive hh:mm:ss duration");
        Assert.True(TimeSpan.Parse(S("Coordinator:SuspectAfter"), CultureInfo.InvariantCulture) < TimeSpan.Parse(S("Coordinator:DeadAfter"), CultureInfo.InvariantCulture));
        foreach (string key in new[] { "Coordinator:Listen", "Coordinator:Http", "Node:Coordinator", "Node:Listen" })
            Assert.Matches(@"^[A-Za-z0-9.\-]+:[0-9]{1,5}$", S(key));
        Assert.True(S("Node:Layers").Length == 0 || LayerRange.TryParse(S("Node:Layers"), out _), "Node:Layers must be empty or A:B");
        Assert.Matches(@"^[0-9]+(\.[0-9]+)?(GB|MB|GiB|MiB)$", S("Node:Memory"));
        Assert.True(leaves["Node:Tp"].GetInt32() >= 1);
        Assert.True(leaves["Node:Threads"].GetInt32() >= 0);
        Assert.True(leaves["Coordinator:MaxConcurrentJobs"].GetInt32() >= 1);
        Assert.Equal("", S("Secret")); // never ship a usable secret
        Assert.Equal(JsonValueKind.Array, leaves["Coordinator:ApiKeys"].ValueKind);
        Assert.Equal(0, leaves["Coordinator:ApiKeys"].GetArrayLength()); // nor a usable API key
        Assert.Equal("", S("Coordinator:MetricsKey"));
    }
}

public class ExampleConfigBindingTests
{
    /// <summary>The example file binds onto the real option classes: every key is a real setting, nothing is misspelt.</summary>
    [Fact]
    public void ExampleConfig_EveryKeyIsARealOption_AndBindsCleanly()
    {
        string path = Path.Combine(TestArtifacts.RepoRoot(), "deploy", "swarm.example.json");
        var cfg = new ConfigurationBuilder().AddJsonFile(Path.GetFullPath(path)).Build();
        foreach (var (section, type) in new[] { ("Coordinator", typeof(Swarm.Coordinator.Service.CoordinatorOptions)), ("Node", typeof(Swarm.Node.NodeOptions)) })
        {
            // The secret is shared by both roles: it lives at the root of the file ("Secret", like SWARM_SECRET).
            var props = type.GetProperties().Where(p => p.CanWrite && p.Name != "Secret").Select(p => p.Name).ToHashSet(StringComparer.OrdinalIgnoreCase);
            var keys = cfg.GetSection(section).GetChildren().Select(c => c.Key).ToList();
            var unknown = keys.Where(k => !props.Contains(k)).ToList();
            var absent = props.Where(p => !keys.Contains(p, StringComparer.OrdinalIgnoreCase)).ToList();
            Assert.True(unknown.Count == 0, $"{section}: example keys that are not options: {string.Join(", ", unknown)}");
            Assert.True(absent.Count == 0, $"{section}: options missing from the example: {string.Join(", ", absent)}");
            var bound = Activator.CreateInstance(type)!;
            cfg.GetSection(section).Bind(bound, o => o.ErrorOnUnknownConfiguration = true);
        }
        Assert.NotNull(cfg["Secret"]);
        var c = new Swarm.Coordinator.Service.CoordinatorOptions();
        cfg.GetSection("Coordinator").Bind(c);
        Assert.Equal(TimeSpan.FromMilliseconds(2500), c.DeadAfter);
    }
}
