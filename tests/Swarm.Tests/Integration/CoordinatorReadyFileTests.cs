using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Swarm.Cli;
using Swarm.Tests.Model;
using Swarm.Tests.Presets;
using Swarm.Transport;
using Swarm.Transport.Security;
using Xunit;

namespace Swarm.Tests.Integration;

/// <summary>
/// The coordinator program binds port 0 for nodes and for HTTP and tells a launcher what it got through
/// <c>--ready-file</c> — the way LocalSwarm (and so every process test, <c>swarm demo</c> and the benchmarks) starts it.
/// </summary>
[Collection("processes")]
public sealed class CoordinatorReadyFileTests
{
    [Fact]
    public async Task PortZero_ReadyFile_NamesTheBoundEndpoints_WhereTheCoordinatorAnswers()
    {
        using var fx = new Fixture(Fixture.Tiny);
        using var tmp = new TempDir();
        string readyFile = tmp.Sub("ready.json");
        var (exe, prefix) = LocalSwarm.CoordinatorCommandLine();
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true };
        string identity = tmp.Sub("keys/coordinator.identity");
        foreach (var a in prefix.Concat(["--model", fx.CheckpointDir, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--ready-file", readyFile, "--identity", identity]))
            psi.ArgumentList.Add(a);
        using var coordinator = Process.Start(psi)!;
        var stdout = coordinator.StandardOutput.ReadToEndAsync();
        var stderr = coordinator.StandardError.ReadToEndAsync();
        try
        {
            var waited = Stopwatch.StartNew();
            while (!File.Exists(readyFile) && !coordinator.HasExited && waited.Elapsed < TimeSpan.FromSeconds(60)) await Task.Delay(50);
            Assert.True(File.Exists(readyFile), $"no ready file (exited: {coordinator.HasExited}):\n{await OutputIfExited(coordinator, stdout, stderr)}");

            var ready = JsonNode.Parse(await File.ReadAllTextAsync(readyFile))!.AsObject();
            Assert.Equal(["http", "key", "listen"], ready.Select(p => p.Key).Order());
            var listen = Regex.Match((string)ready["listen"]!, @"^127\.0\.0\.1:([0-9]+)$");
            var http = Regex.Match((string)ready["http"]!, @"^http://127\.0\.0\.1:([0-9]+)$");
            Assert.True(listen.Success && http.Success, ready.ToJsonString());
            int udpPort = int.Parse(listen.Groups[1].Value), httpPort = int.Parse(http.Groups[1].Value);
            Assert.InRange(udpPort, 1, 65535);
            Assert.InRange(httpPort, 1, 65535);

            // The HTTP API answers at the reported URL…
            using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
            var health = JsonNode.Parse(await client.GetStringAsync($"http://127.0.0.1:{httpPort}/healthz"))!;
            Assert.Equal("ok", (string?)health["status"]);
            Assert.False((bool)health["covered"]!); // no node yet
            // …the identity was created 0600 where --identity said, and the reported key is its public key…
            using (var loaded = NodeIdentity.Load(identity))
                Assert.Equal(PeerKey.Format(loaded.PublicKey.Span), (string)ready["key"]!);
            if (!OperatingSystem.IsWindows()) Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(identity));
            // …and the node listener accepts a Swarm peer at the reported endpoint, proving that key.
            await using var peer = LiteNetTransport.Start(new TransportOptions());
            Assert.True(PeerKey.TryParse((string)ready["key"]!, out var key, out _));
            await peer.ConnectAsync(new IPEndPoint(IPAddress.Loopback, udpPort), key).WaitAsync(TimeSpan.FromSeconds(20));
        }
        finally
        {
            LocalSwarm.Terminate(coordinator);
            if (!coordinator.WaitForExit(15_000)) coordinator.Kill(entireProcessTree: true);
        }
    }

    private static async Task<string> OutputIfExited(Process p, Task<string> stdout, Task<string> stderr) =>
        p.HasExited ? await stdout + await stderr : "(still running)";
}
