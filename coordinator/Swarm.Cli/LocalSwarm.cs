using System.Diagnostics;
using System.Text.Json.Nodes;
using Swarm.Coordinator.Security;
using Swarm.Coordinator.Service;
using Swarm.Engine;

namespace Swarm.Cli;

/// <summary>How to start a swarm of local processes.</summary>
internal sealed record LocalSwarmOptions
{
    /// <summary>Checkpoint folder the coordinator and (unless <see cref="NodesFetchWeights"/>) every node read; unused with <see cref="ModelUrl"/>.</summary>
    public string Model { get; init; } = "";
    /// <summary>When set, the coordinator serves this repository URL (<c>--model-url</c>) instead of <see cref="Model"/>; add <c>--revision</c> to <see cref="CoordinatorArgs"/>.</summary>
    public string? ModelUrl { get; init; }
    /// <summary>Start nodes without <c>--model</c>: they fetch their layers from the coordinator's model source (default false).</summary>
    public bool NodesFetchWeights { get; init; }
    /// <summary>Wait in <see cref="LocalSwarm.StartAsync"/> until every layer is served (default true).</summary>
    public bool WaitUntilCovered { get; init; } = true;
    public int Nodes { get; init; } = 3;
    /// <summary>Pinned ranges per node ("A:B"); null lets the coordinator place by memory.</summary>
    public IReadOnlyList<string?>? Layers { get; init; }
    /// <summary>Memory budget per node (e.g. "2GB"), when not pinned.</summary>
    public string? Memory { get; init; }
    public string WireDtype { get; init; } = "f16";
    /// <summary>
    /// Compute threads of each node (<c>--threads</c>); 0 (default): the cores shared equally among the <see cref="Nodes"/>
    /// node processes (<see cref="ThreadBudget"/>), so processes on one host never oversubscribe it.
    /// </summary>
    public int ThreadsPerNode { get; init; }
    /// <summary>Compute threads each node is started with: <see cref="ThreadsPerNode"/>, or its share of this machine's cores.</summary>
    public int NodeThreads => ThreadsPerNode > 0 ? ThreadsPerNode : ThreadBudget.PerProcess(Math.Max(1, Nodes));
    public string? Secret { get; init; }
    public IReadOnlyList<string> CoordinatorArgs { get; init; } = [];
    public IReadOnlyList<string> NodeArgs { get; init; } = [];
    /// <summary>Extra arguments for node i only (after <see cref="NodeArgs"/>), e.g. <c>--tp 2</c> for one node.</summary>
    public IReadOnlyList<IReadOnlyList<string>>? PerNodeArgs { get; init; }
    /// <summary>Extra environment variables for node i only, e.g. the <c>SWARM_FAULT</c> test hook for one node.</summary>
    public IReadOnlyList<IReadOnlyDictionary<string, string>?>? PerNodeEnvironment { get; init; }
    /// <summary>Folder for the processes' logs (default: a temp folder).</summary>
    public string? LogDir { get; init; }
    /// <summary>
    /// Extra environment variables for every process; <c>{process}</c> in a value becomes the process's name
    /// (coordinator, node-1, …), e.g. <c>SWARM_TRACE_FILE=/tmp/traces/{process}.jsonl</c>.
    /// </summary>
    public IReadOnlyDictionary<string, string> Environment { get; init; } = new Dictionary<string, string>();
    /// <summary>Prometheus <c>--metrics-port</c> per node (0 or missing = off).</summary>
    public IReadOnlyList<int>? NodeMetricsPorts { get; init; }
    /// <summary>The coordinator's <c>--api-key</c>s (none by default); the launcher's own requests send the first.</summary>
    public IReadOnlyList<string> ApiKeys { get; init; } = [];
    /// <summary>The coordinator's <c>--metrics-key</c> (none by default).</summary>
    public string? MetricsKey { get; init; }
    /// <summary>The coordinator's <c>--tls-cert</c> PEM file (with <see cref="TlsKey"/>: HTTPS); null = plain HTTP.</summary>
    public string? TlsCert { get; init; }
    /// <summary>The coordinator's <c>--tls-key</c> PEM file.</summary>
    public string? TlsKey { get; init; }
    /// <summary>PEM file of the CA the launcher trusts for the coordinator's HTTPS (as <c>--cacert</c>), besides the system store.</summary>
    public string? CaCert { get; init; }
    /// <summary>Start nodes with <c>--coordinator-key</c> set to the key the coordinator reports (default true).</summary>
    public bool PinCoordinatorKey { get; init; } = true;
    /// <summary>
    /// The coordinator address node i is given, from i and the coordinator's UDP port, when it should not go straight
    /// to the coordinator (a test's relay in between). Null: 127.0.0.1 and the port.
    /// </summary>
    public Func<int, int, string>? CoordinatorAddressForNode { get; init; }
}

/// <summary>
/// A coordinator and N node processes on loopback, started from this same executable — what
/// <c>swarm demo</c>, the swarm benchmarks and the integration tests run. Each process logs to a file;
/// disposing stops every process (SIGTERM, then kill) so nothing is left behind. The coordinator binds port 0
/// for both its node listener and its HTTP API and reports the ports it got in its <c>--ready-file</c>: no port
/// is chosen here and released for another process to take first. Every process gets its own identity file in the log
/// folder (a restarted process keeps its key), and nodes pin the key the coordinator reports.
/// </summary>
internal sealed class LocalSwarm : IAsyncDisposable
{
    private readonly LocalSwarmOptions _options;
    private readonly Action<string> _log;
    private readonly List<Process?> _nodes = [];
    private readonly CoordinatorHttpClient _http;
    private Process? _coordinator;

    /// <summary>Base URL of the coordinator's HTTP API, e.g. <c>http://127.0.0.1:41234</c> (no trailing slash).</summary>
    public string HttpUrl { get; private set; } = "";
    /// <summary>What a client needs to use the coordinator's HTTP API: its first API key and the CA to trust.</summary>
    public CoordinatorClientCredentials ClientCredentials => new(_options.ApiKeys.FirstOrDefault(), _options.CaCert);
    /// <summary>UDP port nodes connect to on 127.0.0.1.</summary>
    public int ControlPort { get; private set; }
    /// <summary>The coordinator's public key as 64 hex digits (what nodes pin).</summary>
    public string CoordinatorKey { get; private set; } = "";
    public string LogDir { get; }
    public IReadOnlyList<Process?> NodeProcesses => _nodes;
    /// <summary>Process id of the running coordinator (swarm-coordinator).</summary>
    public int CoordinatorProcessId => _coordinator?.Id ?? throw new InvalidOperationException("the coordinator is not running");

    private LocalSwarm(LocalSwarmOptions options, Action<string> log)
    {
        _options = options;
        _log = log;
        LogDir = options.LogDir ?? Path.Combine(Path.GetTempPath(), $"swarm-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..8]}");
        Directory.CreateDirectory(LogDir);
        _http = CoordinatorHttpClient.Create(ClientCredentials, TimeSpan.FromSeconds(5));
    }

    public static async Task<LocalSwarm> StartAsync(LocalSwarmOptions options, Action<string>? log = null, TimeSpan? timeout = null, CancellationToken ct = default)
    {
        var swarm = new LocalSwarm(options, log ?? (_ => { }));
        try
        {
            await swarm.StartCoordinatorAsync(listenPort: 0, httpPort: 0, timeout ?? TimeSpan.FromSeconds(60), ct);
            for (int i = 0; i < options.Nodes; i++) swarm._nodes.Add(swarm.StartNode(i));
            if (options.WaitUntilCovered) await swarm.WaitCoveredAsync(timeout ?? TimeSpan.FromSeconds(120), ct);
            return swarm;
        }
        catch
        {
            await swarm.DisposeAsync();
            throw;
        }
    }

    /// <summary>Waits until every layer is served (GET /healthz says covered).</summary>
    public Task WaitCoveredAsync(TimeSpan timeout, CancellationToken ct = default) =>
        WaitAsync(j => j?["covered"]?.GetValue<bool>() == true, timeout, "the swarm did not cover every layer", ct);

    /// <summary>GET <paramref name="path"/> from the coordinator (with its API key and CA) as JSON.</summary>
    public async Task<JsonNode?> GetJsonAsync(string path, CancellationToken ct = default) =>
        JsonNode.Parse(await _http.Http.GetStringAsync(HttpUrl + path, ct));

    private async Task WaitAsync(Func<JsonNode?, bool> ok, TimeSpan timeout, string what, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < timeout)
        {
            ct.ThrowIfCancellationRequested();
            ThrowIfCoordinatorExited();
            try
            {
                if (ok(await GetJsonAsync("/healthz", ct))) return;
            }
            catch (HttpRequestException) { }
            catch (TaskCanceledException) when (!ct.IsCancellationRequested) { }
            await Task.Delay(100, ct);
        }
        throw new TimeoutException($"{what} within {timeout.TotalSeconds:F0} s; logs in {LogDir}");
    }

    private string ReadyFile => Path.Combine(LogDir, "coordinator.ready.json");

    /// <summary>The identity file of process <paramref name="name"/> (coordinator, node-1, …), in the log folder.</summary>
    public string IdentityFile(string name) => Path.Combine(LogDir, $"{name}.identity");

    /// <summary>
    /// Starts the coordinator on the given ports (0 = the operating system picks) and waits until it has written
    /// the ports it bound to its ready file and answers on HTTP.
    /// </summary>
    private async Task StartCoordinatorAsync(int listenPort, int httpPort, TimeSpan timeout, CancellationToken ct)
    {
        File.Delete(ReadyFile);
        // The coordinator runs as its own torch-free program (swarm-coordinator), as in its container image.
        var args = new List<string> { _options.ModelUrl is null ? "--model" : "--model-url", _options.ModelUrl ?? _options.Model, "--listen", $"127.0.0.1:{listenPort}",
            "--http", $"127.0.0.1:{httpPort}", "--ready-file", ReadyFile, "--wire-dtype", _options.WireDtype,
            "--identity", IdentityFile("coordinator") };
        if (_options.Secret is not null) { args.Add("--secret"); args.Add(_options.Secret); }
        foreach (string key in _options.ApiKeys) { args.Add("--api-key"); args.Add(key); }
        if (_options.MetricsKey is not null) { args.Add("--metrics-key"); args.Add(_options.MetricsKey); }
        if (_options.TlsCert is not null) { args.Add("--tls-cert"); args.Add(_options.TlsCert); }
        if (_options.TlsKey is not null) { args.Add("--tls-key"); args.Add(_options.TlsKey); }
        args.AddRange(_options.CoordinatorArgs);
        _coordinator = Launch("coordinator", args, CoordinatorCommandLine());
        var sw = Stopwatch.StartNew();
        while (!File.Exists(ReadyFile))
        {
            ThrowIfCoordinatorExited();
            if (sw.Elapsed > timeout) throw new TimeoutException($"the coordinator did not report its ports within {timeout.TotalSeconds:F0} s; logs in {LogDir}");
            await Task.Delay(50, ct);
        }
        var bound = CoordinatorEndpoints.Read(ReadyFile);
        ControlPort = System.Net.IPEndPoint.Parse(bound.Listen).Port;
        HttpUrl = bound.Http;
        CoordinatorKey = bound.Key ?? "";
        await WaitAsync(j => j is not null, timeout, "the coordinator did not answer on HTTP", ct);
    }

    private void ThrowIfCoordinatorExited()
    {
        if (_coordinator is { HasExited: true })
            throw new InvalidOperationException($"the coordinator exited with code {_coordinator.ExitCode}; see {Path.Combine(LogDir, "coordinator.log")}");
    }

    /// <summary>Starts one more node (e.g. a spare joining a running swarm); returns its index.</summary>
    public int AddNode(string? layers = null, string? memory = null)
    {
        _nodes.Add(null);
        int i = _nodes.Count - 1;
        _nodes[i] = StartNode(i, layers, memory);
        return i;
    }

    /// <summary>Starts (or restarts) node <paramref name="i"/>.</summary>
    public Process StartNode(int i) => StartNode(i, _options.Layers?.ElementAtOrDefault(i), _options.Memory);

    private Process StartNode(int i, string? layers, string? memory)
    {
        string coordinator = _options.CoordinatorAddressForNode?.Invoke(i, ControlPort) ?? $"127.0.0.1:{ControlPort}";
        var args = new List<string> { "node", "--coordinator", coordinator, "--name", $"node-{i + 1}", "--identity", IdentityFile($"node-{i + 1}") };
        if (!_options.NodesFetchWeights) { args.Add("--model"); args.Add(_options.Model); }
        if (_options.PinCoordinatorKey && CoordinatorKey.Length > 0) { args.Add("--coordinator-key"); args.Add(CoordinatorKey); }
        if (layers is not null) { args.Add("--layers"); args.Add(layers); }
        if (memory is not null) { args.Add("--memory"); args.Add(memory); }
        args.Add("--threads"); args.Add(_options.NodeThreads.ToString());
        if (_options.Secret is not null) { args.Add("--secret"); args.Add(_options.Secret); }
        if (_options.NodeMetricsPorts?.ElementAtOrDefault(i) is > 0 and var port) { args.Add("--metrics-port"); args.Add(port.ToString()); }
        args.AddRange(_options.NodeArgs);
        if (_options.PerNodeArgs?.ElementAtOrDefault(i) is { } own) args.AddRange(own);
        var p = Launch($"node-{i + 1}", args, environment: _options.PerNodeEnvironment?.ElementAtOrDefault(i));
        if (i < _nodes.Count) _nodes[i] = p;
        return p;
    }

    /// <summary>Stops node <paramref name="i"/> gracefully (SIGTERM) and returns its exit code.</summary>
    public int StopNode(int i, TimeSpan timeout)
    {
        var p = _nodes[i]!;
        Terminate(p);
        if (!p.WaitForExit((int)timeout.TotalMilliseconds)) { p.Kill(entireProcessTree: true); return -1; }
        return p.ExitCode;
    }

    /// <summary>Kills the coordinator at once (SIGKILL).</summary>
    public void KillCoordinator()
    {
        if (_coordinator is { HasExited: false } c) { c.Kill(entireProcessTree: true); c.WaitForExit(5000); }
    }

    /// <summary>
    /// Starts the coordinator again on the ports it had (after <see cref="KillCoordinator"/>), where the nodes look
    /// for it, and waits until it answers. Those ports were free a moment ago; should another process have taken one
    /// meanwhile, the coordinator exits and this throws naming its log.
    /// </summary>
    public async Task RestartCoordinatorAsync(CancellationToken ct = default)
    {
        _coordinator?.Dispose();
        int http = new Uri(HttpUrl).Port;
        await StartCoordinatorAsync(ControlPort, http, TimeSpan.FromSeconds(60), ct);
    }

    /// <summary>Kills node <paramref name="i"/> at once (SIGKILL: no goodbye).</summary>
    public void KillNode(int i)
    {
        var p = _nodes[i];
        if (p is { HasExited: false }) { p.Kill(entireProcessTree: true); p.WaitForExit(5000); }
    }

    private Process Launch(string name, List<string> args, (string Exe, string[] Prefix)? program = null,
        IReadOnlyDictionary<string, string>? environment = null)
    {
        var (exe, prefix) = program ?? SelfCommand();
        var psi = new ProcessStartInfo(exe) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in prefix.Concat(args)) psi.ArgumentList.Add(a);
        // Idle OpenMP threads must not spin on cores another process in this swarm needs.
        psi.Environment["OMP_WAIT_POLICY"] = "PASSIVE";
        foreach (var (key, value) in _options.Environment) psi.Environment[key] = value.Replace("{process}", name);
        foreach (var (key, value) in environment ?? new Dictionary<string, string>()) psi.Environment[key] = value;
        var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {name}");
        var log = new StreamWriter(Path.Combine(LogDir, $"{name}.log"), append: true) { AutoFlush = true };
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(e.Data); };
        p.Exited += (_, _) => { lock (log) log.Flush(); };
        p.EnableRaisingEvents = true;
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        _log($"started {name} (pid {p.Id})");
        return p;
    }

    /// <summary>How to run this CLI again as a child process: the apphost, or `dotnet swarm.dll`.</summary>
    internal static (string Exe, string[] Prefix) SelfCommand()
    {
        string dll = typeof(LocalSwarm).Assembly.Location;
        string host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } h && File.Exists(h) ? h : "dotnet";
        return (host, [dll]);
    }

    /// <summary>How to run the coordinator-only program (swarm-coordinator.dll, deployed beside swarm.dll).</summary>
    internal static (string Exe, string[] Prefix) CoordinatorCommandLine()
    {
        var (host, self) = SelfCommand();
        return (host, [Path.Combine(Path.GetDirectoryName(self[0])!, "swarm-coordinator.dll")]);
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);

    /// <summary>Asks a process to stop gracefully (SIGTERM), as systemd or docker would.</summary>
    public static void Terminate(Process p)
    {
        if (p.HasExited) return;
        if (OperatingSystem.IsWindows()) p.Kill(entireProcessTree: true);
        else kill(p.Id, 15);
    }

    public async ValueTask DisposeAsync()
    {
        var all = _nodes.Append(_coordinator).Where(p => p is { HasExited: false }).Cast<Process>().ToList();
        foreach (var p in all)
        {
            Terminate(p);
        }
        foreach (var p in all)
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            try { await p.WaitForExitAsync(cts.Token); }
            catch (OperationCanceledException) { p.Kill(entireProcessTree: true); }
        }
        foreach (var p in _nodes.Append(_coordinator)) p?.Dispose();
        _http.Dispose();
    }
}
