using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Swarm.Tests.Integration;
using Swarm.Tests.Model;
using Swarm.Tests.Presets;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Nat;

/// <summary>
/// Volunteers behind NAT, for real: the coordinator in a public namespace, nodes A and B behind endpoint-independent NATs
/// and node C behind a symmetric NAT (<see cref="NatTopology"/>, built once for the class). The nodes are started with
/// nothing about NAT — only the coordinator's address, the swarm secret, the fixture's folder and their pinned layers —
/// and serve the fixture's golden greedy tokens through A → B → C: the hop A → B is punched, B → C (symmetric NAT)
/// relayed — through the coordinator, or through a volunteer relay node (<c>--relay</c>) in the public namespace.
/// </summary>
[Collection("processes")]
public sealed partial class NatSwarmTests(NatTopologyFixture topology, ITestOutputHelper output) : IClassFixture<NatTopologyFixture>
{
    private const string Secret = "nat-test-secret";
    private static readonly TimeSpan Startup = TimeSpan.FromSeconds(60);

    [NamespaceFact]
    public async Task NodesBehindNat_ServeGoldenTokens_PunchedAndRelayed_AndSurviveLosingTheRelayPath()
    {
        using var fx = new Fixture(Fixture.Small);
        using var tmp = new TempDir();
        var net = topology.Topology;
        var processes = new List<CliProcess>();
        try
        {
            var coordinator = await StartSwarmAsync(net, fx, tmp, processes, relay: false);

            // First job: A → B is punched; punching B → C fails (C's NAT gives every destination another port), so the
            // route is repaired over the coordinator's relay and the job still produces the golden tokens.
            var expected = fx.Ids("greedy.0");
            Assert.Equal(expected, await GenerateAsync(net, fx.Ids("prompt.0"), expected.Length));
            string log = coordinator.Output;
            Assert.Contains("punching the hop node-b → node-c failed", log);
            Assert.Contains("relaying the hop node-b → node-c through this coordinator", log);
            Assert.DoesNotContain("relaying the hop node-a → node-b", log);
            output.WriteLine("first job: golden tokens over a punched and a relayed hop");

            // The link table: A → B punched (B's NAT keeps the source port, so punching it is certain), B → C relayed
            // through the coordinator, each with its measured round trip.
            var links = await WaitForLinksAsync(net, l => Row(l, "node-a", "node-b") is not null && Row(l, "node-b", "node-c") is not null);
            AssertRow(links, "node-a", "node-b", "punched", via: null);
            AssertRow(links, "node-b", "node-c", "relayed", via: "coordinator");

            // Second job: the relay path dies mid-job (the public namespace drops the relay's ports); the relay notices the
            // silence, the coordinator re-routes over a fresh relay allocation and replays: the same tokens.
            var (up, down) = RelayPorts(coordinator.Output).Last();
            int recoveriesBefore = Regex.Matches(coordinator.Output, "re-routing and replaying").Count;
            var second = GenerateAsync(net, fx.Ids("prompt.0"), expected.Length);
            await Task.Delay(TimeSpan.FromSeconds(3.5)); // the CLI starts (~1 s), then a token per ≥ 200 ms
            net.DropUdpTo(up, down);
            output.WriteLine($"dropped the relay ports {up} and {down}");
            Assert.Equal(expected, await second);
            log = coordinator.Output;
            var recoveries = Recoveries(log, recoveriesBefore);
            Assert.Contains(recoveries, m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) > 0); // in the middle of the job
            Assert.Contains(recoveries, m => m.Value.Contains("went silent", StringComparison.Ordinal)); // noticed by the relay, not by the 30 s step timeout
            Assert.Contains(RelayPorts(log), p => p != (up, down)); // a new allocation carries the hop now
        }
        finally
        {
            await StopAllAsync(processes);
        }
    }

    [NamespaceFact]
    public async Task VolunteerRelay_CarriesTheSymmetricNatHop_InsteadOfTheCoordinator_AndItsDeathMidJobIsRecovered()
    {
        using var fx = new Fixture(Fixture.Small);
        using var tmp = new TempDir();
        var net = topology.Topology;
        var processes = new List<CliProcess>();
        try
        {
            var coordinator = await StartSwarmAsync(net, fx, tmp, processes, relay: true);
            var relay = processes[^1];

            // First job: punching B → C fails and the hop is relayed through the volunteer, not the coordinator.
            var expected = fx.Ids("greedy.0");
            Assert.Equal(expected, await GenerateAsync(net, fx.Ids("prompt.0"), expected.Length));
            string log = coordinator.Output;
            Assert.Contains("punching the hop node-b → node-c failed", log);
            Assert.Contains($"relaying the hop node-b → node-c through volunteer relay-r: {NatTopology.RelayAddress}:", log);
            Assert.DoesNotContain("through this coordinator", log);
            Assert.Matches($@"relaying hop \d+ for the swarm: port \d+ for {Regex.Escape(NatTopology.WanAddress('b'))}, port \d+ for {Regex.Escape(NatTopology.WanAddress('c'))}", relay.Output);

            // The link table names the volunteer; its heartbeats say it carried the hop's datagrams; the coordinator's relay carried none.
            var status = await WaitForStatusAsync(net, s => Row(s["links"]!.AsArray(), "node-b", "node-c") is not null
                && Node(s, "relay-r")?["relay"]?["bytes"]?.GetValue<long>() > 0);
            AssertRow(status["links"]!.AsArray(), "node-b", "node-c", "relayed", via: "relay-r");
            var carried = Node(status, "relay-r")!["relay"]!;
            Assert.True(carried["datagrams"]!.GetValue<long>() > 0, carried.ToJsonString());
            Assert.Equal(0, status["relay"]!["bytes"]!.GetValue<long>());
            Assert.Null(Node(status, "node-b")!["relay"]);
            output.WriteLine($"first job: B → C relayed through the volunteer ({carried.ToJsonString()})");

            // Second job: the volunteer dies mid-job (SIGKILL). The hop is re-planned — the coordinator relays it now —
            // the job's steps are replayed, and the output is the same.
            int recoveriesBefore = Regex.Matches(coordinator.Output, "re-routing and replaying").Count;
            var second = GenerateAsync(net, fx.Ids("prompt.0"), expected.Length);
            await Task.Delay(TimeSpan.FromSeconds(3.5)); // the CLI starts (~1 s), then a token per ≥ 200 ms
            relay.Kill();
            output.WriteLine("killed the volunteer relay");
            Assert.Equal(expected, await second);
            log = coordinator.Output;
            Assert.Contains(Recoveries(log, recoveriesBefore), m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) > 0); // in the middle of the job
            Assert.Contains("relaying the hop node-b → node-c through this coordinator", log);
        }
        finally
        {
            await StopAllAsync(processes);
        }
    }

    /// <summary>
    /// Starts the coordinator, then — with <paramref name="relay"/> — a volunteer relay node "relay-r" in the public
    /// namespace that holds no layers (its memory fits none), and nodes A (0:2), B (2:4, each output delayed 200 ms so a
    /// job lasts long enough to lose a path in the middle of it) and C (4:6); returns the coordinator once all are in.
    /// The relay, when started, is the last of <paramref name="processes"/>.
    /// </summary>
    private async Task<CliProcess> StartSwarmAsync(NatTopology net, Fixture fx, TempDir tmp, List<CliProcess> processes, bool relay)
    {
        var coordinator = CliProcess.StartIn(net.Public, SwarmProgram.Coordinator, new Dictionary<string, string> { ["SWARM_HOME"] = tmp.Sub("coordinator") },
            "--model", fx.CheckpointDir, "--listen", $"{NatTopology.CoordinatorAddress}:7700", "--http", "127.0.0.1:8080",
            "--secret", Secret, "--wire-dtype", "f32");
        processes.Add(coordinator);
        await coordinator.WaitForOutputAsync("coordinator listening on", Startup);
        var nodes = new Dictionary<char, CliProcess>();
        foreach (var (site, layers) in new[] { ('a', "0:2"), ('b', "2:4"), ('c', "4:6") })
        {
            string[] latency = site == 'b' ? ["--simulate-latency-ms", "200"] : [];
            nodes[site] = CliProcess.StartIn(net.Host(site), SwarmProgram.Cli, new Dictionary<string, string> { ["SWARM_HOME"] = tmp.Sub($"node-{site}") },
                ["node", "--coordinator", $"{NatTopology.CoordinatorAddress}:7700", "--secret", Secret, "--model", fx.CheckpointDir,
                 "--layers", layers, "--threads", "1", "--name", $"node-{site}", .. latency]);
            processes.Add(nodes[site]);
        }
        if (relay)
        {
            var volunteer = CliProcess.StartIn(net.Public, SwarmProgram.Cli, new Dictionary<string, string> { ["SWARM_HOME"] = tmp.Sub("relay-r") },
                "node", "--coordinator", $"{NatTopology.CoordinatorAddress}:7700", "--secret", Secret, "--model", fx.CheckpointDir,
                "--listen", $"{NatTopology.RelayAddress}:0", "--relay", "--memory", "1MB", "--threads", "1", "--name", "relay-r");
            processes.Add(volunteer);
            await volunteer.WaitForOutputAsync("volunteering as a relay: accepted", Startup);
            await coordinator.WaitForOutputAsync("node relay-r volunteers as a relay: relaying hops through it", Startup);
        }
        await coordinator.WaitForOutputAsync(") joined: ", Startup, times: relay ? 4 : 3);
        await Task.Delay(500); // a node that loaded its pinned layers before registering serves at once; one assigned them reports ready a moment later
        foreach (var (site, node) in nodes)
        {
            await node.WaitForOutputAsync("peers will punch or relay", Startup);
            Assert.Contains($"behind NAT (seen as {NatTopology.WanAddress(site)}:", node.Output);
        }
        return coordinator;
    }

    private async Task StopAllAsync(List<CliProcess> processes)
    {
        foreach (var p in processes) await p.DisposeAsync();
        foreach (var p in processes) output.WriteLine(p.Output.Length > 6000 ? p.Output[^6000..] : p.Output);
    }

    private static List<Match> Recoveries(string log, int before)
    {
        var recoveries = Regex.Matches(log, @"job \d+ step (\d+): route failed .* re-routing and replaying").Skip(before).ToList();
        Assert.NotEmpty(recoveries);
        return recoveries;
    }

    private static JsonNode? Row(JsonArray links, string from, string to) =>
        links.FirstOrDefault(l => (string?)l!["from"] == from && (string?)l["to"] == to);

    private static JsonNode? Node(JsonNode status, string name) =>
        status["nodes"]!.AsArray().FirstOrDefault(n => (string?)n!["name"] == name);

    /// <summary>The row <paramref name="from"/> → <paramref name="to"/> is there once, with this path and relay, and a measured round trip.</summary>
    private static void AssertRow(JsonArray links, string from, string to, string path, string? via)
    {
        var rows = links.Where(l => (string?)l!["from"] == from && (string?)l["to"] == to).ToList();
        var row = Assert.Single(rows);
        Assert.Equal((path, via), ((string?)row!["path"], (string?)row["via"]));
        Assert.Equal(System.Text.Json.JsonValueKind.Number, row["rtt_ms"]!.GetValueKind());
        Assert.True(row["rtt_ms"]!.GetValue<double>() >= 0, row.ToJsonString());
    }

    private static async Task<JsonArray> WaitForLinksAsync(NatTopology net, Func<JsonArray, bool> ready) =>
        (await WaitForStatusAsync(net, s => ready(s["links"]!.AsArray())))["links"]!.AsArray();

    /// <summary>
    /// <c>swarm status --json</c> inside the public namespace until <paramref name="ready"/> holds (links and relay figures
    /// arrive with heartbeats, every 500 ms); the last status when 20 s pass.
    /// </summary>
    private static async Task<JsonNode> WaitForStatusAsync(NatTopology net, Func<JsonNode, bool> ready)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (true)
        {
            var (exit, stdout, stderr) = await CliProcess.RunInAsync(net.Public, SwarmProgram.Cli, TimeSpan.FromSeconds(30),
                "status", "--url", "http://127.0.0.1:8080", "--json");
            Assert.True(exit == 0, $"status failed ({exit}): {stderr}");
            var status = JsonNode.Parse(stdout)!;
            if (ready(status) || DateTime.UtcNow > deadline) return status;
            await Task.Delay(500);
        }
    }

    private static List<(int Up, int Down)> RelayPorts(string log) =>
        [.. RelayLine().Matches(log).Select(m => (int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture)))];

    [GeneratedRegex(@"relay port (\d+) for the upstream node, (\d+) for the downstream node")]
    private static partial Regex RelayLine();

    private static async Task<long[]> GenerateAsync(NatTopology net, long[] prompt, int tokens)
    {
        var (exit, stdout, stderr) = await CliProcess.RunInAsync(net.Public, SwarmProgram.Cli, TimeSpan.FromSeconds(90),
            "generate", "--url", "http://127.0.0.1:8080", "--prompt-ids", string.Join(',', prompt), "--max-new-tokens", tokens.ToString(CultureInfo.InvariantCulture),
            "--temperature", "0", "--json");
        Assert.True(exit == 0, $"generate failed ({exit}): {stderr}");
        return JsonNode.Parse(stdout)!["token_ids"]!.AsArray().Select(t => (long)t!).ToArray();
    }
}
