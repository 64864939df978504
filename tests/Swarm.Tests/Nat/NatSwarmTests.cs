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
/// and node C behind a symmetric NAT (<see cref="NatTopology"/>). The nodes are started with nothing about NAT — only the
/// coordinator's address, the swarm secret, the fixture's folder and their pinned layers — and serve the fixture's golden
/// greedy tokens through A → B → C: the hop A → B is punched, B → C (symmetric NAT) relayed through the coordinator.
/// </summary>
[Collection("processes")]
public sealed partial class NatSwarmTests(ITestOutputHelper output)
{
    private const string Secret = "nat-test-secret";
    private static readonly TimeSpan Startup = TimeSpan.FromSeconds(60);

    [NamespaceFact]
    public async Task NodesBehindNat_ServeGoldenTokens_PunchedAndRelayed_AndSurviveLosingTheRelayPath()
    {
        using var fx = new Fixture(Fixture.Small);
        using var tmp = new TempDir();
        using var net = NatTopology.Create();
        var processes = new List<CliProcess>();
        try
        {
            var coordinator = CliProcess.StartIn(net.Public, SwarmProgram.Coordinator, new Dictionary<string, string> { ["SWARM_HOME"] = tmp.Sub("coordinator") },
                "--model", fx.CheckpointDir, "--listen", $"{NatTopology.CoordinatorAddress}:7700", "--http", "127.0.0.1:8080",
                "--secret", Secret, "--wire-dtype", "f32");
            processes.Add(coordinator);
            await coordinator.WaitForOutputAsync("coordinator listening on", Startup);
            var nodes = new Dictionary<char, CliProcess>();
            foreach (var (site, layers) in new[] { ('a', "0:2"), ('b', "2:4"), ('c', "4:6") })
            {
                // A → B → C: A's outputs wait 200 ms each, so a job lasts long enough to lose a path in the middle of it.
                string[] latency = site == 'a' ? ["--simulate-latency-ms", "200"] : [];
                nodes[site] = CliProcess.StartIn(net.Host(site), SwarmProgram.Cli, new Dictionary<string, string> { ["SWARM_HOME"] = tmp.Sub($"node-{site}") },
                    ["node", "--coordinator", $"{NatTopology.CoordinatorAddress}:7700", "--secret", Secret, "--model", fx.CheckpointDir,
                     "--layers", layers, "--threads", "1", "--name", $"node-{site}", .. latency]);
                processes.Add(nodes[site]);
            }
            await coordinator.WaitForOutputAsync(") joined: ", Startup, times: 3);
            await Task.Delay(500); // a node that loaded its pinned layers before registering serves at once; one assigned them reports ready a moment later
            foreach (var (site, node) in nodes)
            {
                await node.WaitForOutputAsync("peers will punch or relay", Startup);
                Assert.Contains($"behind NAT (seen as {NatTopology.WanAddress(site)}:", node.Output);
            }

            // First job: A → B is punched; punching B → C fails (C's NAT gives every destination another port), so the
            // route is repaired over a relay and the job still produces the golden tokens.
            var expected = fx.Ids("greedy.0");
            Assert.Equal(expected, await GenerateAsync(net, fx.Ids("prompt.0"), expected.Length));
            string log = coordinator.Output;
            Assert.Contains("punching the hop node-b → node-c failed", log);
            Assert.DoesNotContain("punching the hop node-a → node-b failed", log);
            Assert.Contains("relaying the hop node-b → node-c through this coordinator", log);
            Assert.DoesNotContain("relaying the hop node-a → node-b", log);
            Assert.Contains("will connect directly (punching)", nodes['b'].Output);
            Assert.Contains("will connect through a relay", nodes['c'].Output);
            output.WriteLine("first job: golden tokens over a punched and a relayed hop");

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
            var recoveries = Regex.Matches(log, @"job \d+ step (\d+): route failed .* re-routing and replaying").Skip(recoveriesBefore).ToList();
            Assert.NotEmpty(recoveries);
            Assert.Contains(recoveries, m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) > 0); // in the middle of the job
            Assert.Contains(recoveries, m => m.Value.Contains("went silent", StringComparison.Ordinal)); // noticed by the relay, not by the 30 s step timeout
            Assert.Contains(RelayPorts(log), p => p != (up, down)); // a new allocation carries the hop now
        }
        finally
        {
            foreach (var p in processes) await p.DisposeAsync();
            foreach (var p in processes) output.WriteLine(p.Output.Length > 6000 ? p.Output[^6000..] : p.Output);
        }
    }

    private static List<(int Up, int Down)> RelayPorts(string log) =>
        [.. RelayLine().Matches(log).Select(m => (int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture)))];

    [GeneratedRegex(@"relay port (\d+) for the upstream node, (\d+) for the downstream node")]
    private static partial Regex RelayLine();

    private static async Task<long[]> GenerateAsync(NatTopology net, long[] prompt, int tokens)
    {
        var (exit, stdout, stderr) = await CliProcess.RunInAsync(net.Public, SwarmProgram.Cli, TimeSpan.FromSeconds(60),
            "generate", "--url", "http://127.0.0.1:8080", "--prompt-ids", string.Join(',', prompt), "--max-new-tokens", tokens.ToString(CultureInfo.InvariantCulture),
            "--temperature", "0", "--json");
        Assert.True(exit == 0, $"generate failed ({exit}): {stderr}");
        return JsonNode.Parse(stdout)!["token_ids"]!.AsArray().Select(t => (long)t!).ToArray();
    }
}
