using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Swarm.Cli;
using Swarm.Tests.Model;
using Swarm.Tests.Presets;
using Swarm.Tests.Transport;
using Swarm.Transport;
using Swarm.Transport.Security;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Integration;

/// <summary>
/// The secure channel through real processes: a coordinator and node processes on the tiny fixture, a relay of ours
/// between a node and the coordinator that records, replays, alters or reads what passes.
/// </summary>
[Collection("processes")]
public sealed class SecureSwarmTests(ITestOutputHelper output)
{
    /// <summary>Runs one more node process against <paramref name="swarm"/> until it exits; its exit code and output.</summary>
    internal static async Task<(int Exit, string Log)> RunNodeAsync(LocalSwarm swarm, Fixture fx, string identity, params string[] extra)
    {
        using var p = StartNode(swarm, fx, identity, extra);
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try { await p.WaitForExitAsync(cts.Token); }
        catch (OperationCanceledException) { p.Kill(entireProcessTree: true); }
        return (p.HasExited ? p.ExitCode : -1, await stdout + await stderr);
    }

    private static Process StartNode(LocalSwarm swarm, Fixture fx, string identity, params string[] extra)
    {
        var (exe, prefix) = LocalSwarm.SelfCommand();
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in prefix.Concat(["node", "--coordinator", $"127.0.0.1:{swarm.ControlPort}", "--model", fx.CheckpointDir,
                     "--layers", "0:4", "--threads", "1", "--identity", identity]).Concat(extra))
            psi.ArgumentList.Add(a);
        return Process.Start(psi)!;
    }

    private static async Task<string> CoordinatorLogAsync(LocalSwarm swarm) =>
        await File.ReadAllTextAsync(Path.Combine(swarm.LogDir, "coordinator.log"));

    private static async Task<double> MetricAsync(LocalSwarm swarm, string metric, string label)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        string text = await http.GetStringAsync(swarm.HttpUrl + "/metrics");
        var line = text.Split('\n').FirstOrDefault(l => l.StartsWith(metric + "{", StringComparison.Ordinal) && l.Contains(label, StringComparison.Ordinal));
        return line is null ? 0 : double.Parse(line[(line.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture);
    }

    private static async Task WaitForAsync(Func<Task<bool>> condition, string what)
    {
        var sw = Stopwatch.StartNew();
        while (!await condition())
        {
            if (sw.Elapsed > TimeSpan.FromSeconds(30)) throw new TimeoutException(what);
            await Task.Delay(200);
        }
    }

    [Fact]
    public async Task MissingSecret_AndWrongPinnedCoordinatorKey_AreRefused_WithAClearLineOnBothSides()
    {
        using var fx = new Fixture(Fixture.Tiny);
        using var tmp = new TempDir();
        await using var swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
        {
            Model = fx.CheckpointDir, Nodes = 1, Layers = ["0:4"], Secret = "right-secret", ThreadsPerNode = 1,
        }, output.WriteLine);
        using var impostor = NodeIdentity.CreateEphemeral();
        var noSecret = RunNodeAsync(swarm, fx, tmp.Sub("a.identity"));
        var wrongPin = RunNodeAsync(swarm, fx, tmp.Sub("b.identity"), "--secret", "right-secret", "--coordinator-key", PeerKey.Format(impostor.PublicKey.Span));
        var (exitA, logA) = await noSecret;
        var (exitB, logB) = await wrongPin;
        output.WriteLine(logA);
        output.WriteLine(logB);
        string coordLog = await CoordinatorLogAsync(swarm);

        Assert.NotEqual(0, exitA);
        Assert.Contains($"127.0.0.1:{swarm.ControlPort} refused the connection: this swarm requires a swarm secret; you have none", logA);
        Assert.Contains("the peer connects without a swarm secret, but this swarm requires one", coordLog);

        Assert.NotEqual(0, exitB);
        Assert.True(PeerKey.TryParse(swarm.CoordinatorKey, out var coordinatorKey, out _));
        string coordinator = PeerKey.Fingerprint(coordinatorKey);
        Assert.Contains($"127.0.0.1:{swarm.ControlPort} failed authentication: the peer's key {coordinator} is not the pinned key {impostor.Fingerprint}", logB);
        Assert.Matches($@"Handshake with 127\.0\.0\.1:[0-9]+, which connected to us, failed: .*is not the key this peer pinned \({Regex.Escape(impostor.Fingerprint)}\)", coordLog);

        var status = (await swarm.GetJsonAsync("/api/swarm"))!;
        Assert.Single(status["nodes"]!.AsArray());
    }

    [Fact]
    public async Task Replay_OfALegitimateNodesConnection_FromAnotherPort_AndAWrongSecret_RegisterNoNode_AndAreCounted()
    {
        using var fx = new Fixture(Fixture.Tiny);
        using var tmp = new TempDir();
        var recorded = new ConcurrentQueue<byte[]>();
        UdpDelayProxy? relay = null;
        try
        {
            await using var swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
            {
                Model = fx.CheckpointDir, Nodes = 1, Layers = ["0:4"], Secret = "right-secret", ThreadsPerNode = 1,
                CoordinatorAddressForNode = (_, port) =>
                {
                    relay = new UdpDelayProxy(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.Zero, (d, direction) =>
                    {
                        if (direction == RelayDirection.ToServer) recorded.Enqueue(d.ToArray());
                        return d;
                    });
                    return relay.FrontEndPoint.ToString();
                },
            }, output.WriteLine);
            Assert.Equal(fx.Ids("greedy.1")[..3], await SwarmClient.CompleteAsync(swarm.HttpUrl, fx.Ids("prompt.1"), 3));
            double refusedBefore = await MetricAsync(swarm, "swarm_transport_connections_refused_total", "reason=\"refused\"");
            output.WriteLine($"replaying {recorded.Count} datagrams the node sent: its connection request, handshake and records");

            using (var replayer = new UdpClient(new IPEndPoint(IPAddress.Loopback, 0)))
                foreach (var datagram in recorded.ToArray())
                {
                    await replayer.SendAsync(datagram, new IPEndPoint(IPAddress.Loopback, swarm.ControlPort));
                    await Task.Delay(1);
                }
            var (exit, log) = await RunNodeAsync(swarm, fx, tmp.Sub("wrong.identity"), "--secret", "wrong-secret");
            Assert.NotEqual(0, exit);
            Assert.Contains("refused the connection: the swarm secrets differ", log);

            // The replayed handshake fails (its message 3 answers another responder ephemeral) or times out; either way
            // it is refused and counted, as is the wrong secret.
            await WaitForAsync(async () => await MetricAsync(swarm, "swarm_transport_connections_refused_total", "reason=\"refused\"") >= refusedBefore + 2,
                "the replay and the wrong secret were not both counted as refused");
            var status = (await swarm.GetJsonAsync("/api/swarm"))!;
            Assert.Single(status["nodes"]!.AsArray());
            Assert.Equal(1, await MetricAsync(swarm, "swarm_transport_handshakes_total", "outcome=\"established\""));
            Assert.Equal(fx.Ids("greedy.1")[..3], await SwarmClient.CompleteAsync(swarm.HttpUrl, fx.Ids("prompt.1"), 3));
        }
        finally
        {
            relay?.Dispose();
        }
    }

    [Fact]
    public async Task Tamper_OneBitOfAStepInFlight_IsDropped_AndTheJobStillReturnsTheGoldenTokens()
    {
        using var fx = new Fixture(Fixture.Tiny);
        int armed = 0;
        UdpDelayProxy? relay = null;
        try
        {
            await using var swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
            {
                Model = fx.CheckpointDir, Nodes = 1, Layers = ["0:4"], ThreadsPerNode = 1,
                CoordinatorArgs = ["--step-timeout", "3s"],
                CoordinatorAddressForNode = (_, port) =>
                {
                    relay = new UdpDelayProxy(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.Zero, (d, direction) =>
                    {
                        int at = SecureTransportTests.RecordOffset(d);
                        if (direction == RelayDirection.ToClient && at >= 0 && d.Length > 100 && Interlocked.CompareExchange(ref armed, 2, 1) == 1)
                            d[at + 13 + 5] ^= 0x10; // one bit of the first step's ciphertext, coordinator → node
                        return d;
                    });
                    return relay.FrontEndPoint.ToString();
                },
            }, output.WriteLine);
            Volatile.Write(ref armed, 1);
            var tokens = await SwarmClient.CompleteAsync(swarm.HttpUrl, fx.Ids("prompt.1"), 5);
            Assert.Equal(2, Volatile.Read(ref armed));
            Assert.Equal(fx.Ids("greedy.1")[..5], tokens);

            string nodeLog = await File.ReadAllTextAsync(Path.Combine(swarm.LogDir, "node-1.log"));
            Assert.Matches(@"Dropped a record from 127\.0\.0\.1:[0-9]+ \(swarm:[a-z2-7]{16}\): it did not authenticate \(altered in transit, or forged\)", nodeLog);
            // LiteNetLib acknowledged the altered packet before it was opened: the step was lost and the coordinator recovered it.
            var status = (await swarm.GetJsonAsync("/api/swarm"))!;
            Assert.True((long)status["recoveries"]! >= 1, status.ToJsonString());
        }
        finally
        {
            relay?.Dispose();
        }
    }

    [Fact]
    public async Task Eavesdrop_OnAWholeGeneration_NeitherThePromptsTokenIdsNorTheNodesNameAppearInAnyPayload()
    {
        using var fx = new Fixture(Fixture.Tiny);
        var captured = new ConcurrentQueue<byte[]>();
        UdpDelayProxy? relay = null;
        try
        {
            await using var swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
            {
                Model = fx.CheckpointDir, Nodes = 1, Layers = ["0:4"], Secret = "s3cret", ThreadsPerNode = 1,
                CoordinatorAddressForNode = (_, port) =>
                {
                    relay = new UdpDelayProxy(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.Zero, (d, _) => { captured.Enqueue(d.ToArray()); return d; });
                    return relay.FrontEndPoint.ToString();
                },
            }, output.WriteLine);
            var prompt = fx.Ids("prompt.2");
            var tokens = await SwarmClient.CompleteAsync(swarm.HttpUrl, prompt, 8);
            Assert.Equal(fx.Ids("greedy.2")[..8], tokens);

            var all = captured.ToArray();
            long bytes = all.Sum(d => (long)d.Length);
            output.WriteLine($"{all.Length} datagrams, {bytes} bytes captured");
            Assert.True(bytes > prompt.Length * 8 * 2, "the generation went through the relay");
            for (int i = 0; i + 1 < prompt.Length; i++)
            {
                var pair64 = new byte[16];
                BinaryPrimitives.WriteInt64LittleEndian(pair64, prompt[i]);
                BinaryPrimitives.WriteInt64LittleEndian(pair64.AsSpan(8), prompt[i + 1]);
                var pair32 = new byte[8];
                BinaryPrimitives.WriteInt32LittleEndian(pair32, (int)prompt[i]);
                BinaryPrimitives.WriteInt32LittleEndian(pair32.AsSpan(4), (int)prompt[i + 1]);
                Assert.DoesNotContain(all, d => d.AsSpan().IndexOf(pair64) >= 0);
                Assert.DoesNotContain(all, d => d.AsSpan().IndexOf(pair32) >= 0);
            }
            // The node's registration is sealed as well: its name and data endpoint never pass in the clear.
            Assert.DoesNotContain(all, d => d.AsSpan().IndexOf(Encoding.UTF8.GetBytes("node-1")) >= 0);
            Assert.DoesNotContain(all, d => d.AsSpan().IndexOf("gpt_neox"u8) >= 0);
        }
        finally
        {
            relay?.Dispose();
        }
    }

    [Fact]
    public async Task KnownNodeName_WithAnotherKey_IsFlagged_InTheLogAndApiSwarm()
    {
        using var fx = new Fixture(Fixture.Tiny);
        using var tmp = new TempDir();
        await using var swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
        {
            Model = fx.CheckpointDir, Nodes = 1, Layers = ["0:4"], ThreadsPerNode = 1,
        }, output.WriteLine);
        string original;
        using (var first = NodeIdentity.Load(swarm.IdentityFile("node-1"))) original = first.Fingerprint;
        using var other = StartNode(swarm, fx, tmp.Sub("other.identity"), "--name", "node-1", "--coordinator-key", swarm.CoordinatorKey);
        try
        {
            System.Text.Json.Nodes.JsonArray nodes = [];
            await WaitForAsync(async () => (nodes = (await swarm.GetJsonAsync("/api/swarm"))!["nodes"]!.AsArray()).Count == 2, "the second node-1 did not register");
            var honest = nodes.Single(n => (string?)n!["key"] == original)!;
            var impostor = nodes.Single(n => (string?)n!["key"] != original)!;
            Assert.Null(honest["key_changed_from"]);
            Assert.Equal("node-1", (string)impostor["name"]!);
            Assert.Equal(original, (string)impostor["key_changed_from"]!);
            string coordLog = await CoordinatorLogAsync(swarm);
            Assert.Contains($"node name node-1 was first seen with key {original}, but node {(int)impostor["id"]!} at ", coordLog);
            Assert.Contains($"proves {(string)impostor["key"]!}", coordLog);
        }
        finally
        {
            other.Kill(entireProcessTree: true);
            await other.WaitForExitAsync();
        }
    }

    [Fact]
    public async Task HopConnection_FromAPeerTheCoordinatorDidNotVouchFor_IsRefused_EvenWithTheSecret()
    {
        using var fx = new Fixture(Fixture.Tiny);
        await using var swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
        {
            Model = fx.CheckpointDir, Nodes = 2, Layers = ["0:2", "2:4"], Secret = "s3cret", ThreadsPerNode = 1,
        }, output.WriteLine);
        // Vouched hops work: node-1 pins node-2's key from the route and node-2 knows node-1's key from the coordinator.
        Assert.Equal(fx.Ids("greedy.1")[..4], await SwarmClient.CompleteAsync(swarm.HttpUrl, fx.Ids("prompt.1"), 4));

        var status = (await swarm.GetJsonAsync("/api/swarm"))!;
        var second = status["nodes"]!.AsArray().Single(n => (string)n!["name"]! == "node-2")!;
        Assert.True(EndPoints.TryParse((string)second["address"]!, out var dataEndPoint));
        await using var outsider = LiteNetTransport.Start(new TransportOptions { Secret = "s3cret" });
        var ex = await Assert.ThrowsAsync<PeerRefusedException>(() => outsider.ConnectAsync(dataEndPoint!).WaitAsync(TimeSpan.FromSeconds(20)));
        string fingerprint = PeerKey.Fingerprint(outsider.LocalKey.Span);
        Assert.Contains($"refused the connection: your key {fingerprint} is not accepted: the coordinator has not vouched for {fingerprint}", ex.Message);
        // The node logs the refusal asynchronously: its line may reach the log file a moment after the outsider saw the refusal.
        string expected = $"is not accepted: the coordinator has not vouched for {fingerprint} (it is not a current member of this swarm)";
        string nodeLog = "";
        for (var until = DateTime.UtcNow.AddSeconds(10); !nodeLog.Contains(expected, StringComparison.Ordinal) && DateTime.UtcNow < until; await Task.Delay(100))
            nodeLog = await File.ReadAllTextAsync(Path.Combine(swarm.LogDir, "node-2.log"));
        Assert.Contains(expected, nodeLog);
    }
}
