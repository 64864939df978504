using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using Swarm.Tests.Integration;
using Swarm.Tests.Model;
using Swarm.Transport;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Transport;

/// <summary>
/// Hostile or broken traffic at a real coordinator process on 127.0.0.1: every event is counted in
/// <c>swarm_transport_dropped_total</c>, while the log shows the first occurrence and then a count per interval —
/// not one line per datagram or connect.
/// </summary>
[Collection("processes")]
public class LogFloodTests(ITestOutputHelper output)
{
    private const int GarbageDatagrams = 5_000;
    private const int RefusedConnects = 60; // past the per-address burst of 20, so both causes of refusal occur

    [Fact]
    public async Task GarbageDatagramsAndRefusedConnects_AreAllCounted_AndLogAFewLines()
    {
        using var udpReserved = ReservedPort.Take();
        using var httpReserved = ReservedPort.Take();
        int udpPort = udpReserved.Port;
        string url = $"http://127.0.0.1:{httpReserved.Port}";
        await using var coordinator = CliProcess.Start(SwarmProgram.Coordinator,
            "--model", Path.Combine(Fixture.Root, Fixture.Tiny, "checkpoint"), "--listen", $"127.0.0.1:{udpPort}",
            "--http", url["http://".Length..], "--secret", "the-swarm-secret");
        await coordinator.WaitHealthyAsync(url, TimeSpan.FromSeconds(60));
        var target = new IPEndPoint(IPAddress.Loopback, udpPort);

        // Datagrams whose first byte names no LiteNetLib packet type (property 31): each one is invalid.
        using (var udp = new UdpClient())
        {
            byte[] garbage = [0xFF, 0x13, 0x37, 0x00, 0x42, 0x42, 0x42, 0x42];
            for (int i = 0; i < GarbageDatagrams; i++)
            {
                await udp.SendAsync(garbage, target);
                if (i % 200 == 199) await Task.Delay(5); // stay below the socket's receive buffer: counted, not lost
            }
        }

        // Connects with the wrong swarm secret: refused by the coordinator, and a failure on our side too.
        var clientLog = new TestLogger();
        await using (var client = LiteNetTransport.Start(new TransportOptions { BindAddress = IPAddress.Loopback, Port = 0, Secret = "a-wrong-secret" }, clientLog))
        {
            for (int i = 0; i < RefusedConnects; i++)
                // Refused for the secret, or (past the burst) dropped unanswered by the rate limit until the attempt gives up.
                await Assert.ThrowsAnyAsync<PeerDisconnectedException>(() => client.ConnectAsync(target).WaitAsync(TimeSpan.FromSeconds(10)));
        }

        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        string metrics = "";
        for (int attempt = 0; attempt < 100; attempt++)
        {
            metrics = await http.GetStringAsync(url + "/metrics");
            if (Dropped(metrics, "invalid_datagram") >= GarbageDatagrams && Dropped(metrics, "refused_connection") >= RefusedConnects) break;
            await Task.Delay(100);
        }
        string log = coordinator.Output;
        output.WriteLine(log);
        output.WriteLine(clientLog.Dump());
        Assert.Equal(GarbageDatagrams, Dropped(metrics, "invalid_datagram"));
        // A connect sends its request again until answered, so the coordinator may refuse a few more requests than connects.
        Assert.InRange(Dropped(metrics, "refused_connection"), RefusedConnects, 2 * RefusedConnects);

        string[] lines = log.Split('\n');
        int badLines = lines.Count(l => l.Contains("DataReceived", StringComparison.Ordinal));
        int refusedLines = lines.Count(l => l.Contains("Refused connection", StringComparison.Ordinal));
        Assert.InRange(badLines, 1, 2);
        // Refusals aggregate per cause (the wrong secret, then the per-address rate limit): each cause logs its first
        // line and at most one more after the 10 s interval.
        Assert.InRange(refusedLines, 1, 4);
        Assert.True(lines.Length < 40, $"{lines.Length} log lines for {GarbageDatagrams} datagrams and {RefusedConnects} connects");
        int clientWarnings = clientLog.Entries.Count(e => e.Level >= LogLevel.Warning);
        Assert.InRange(clientWarnings, 1, 3);
    }

    /// <summary>The value of <c>swarm_transport_dropped_total{reason="…"}</c>, 0 when absent.</summary>
    private static long Dropped(string exposition, string reason)
    {
        var m = Regex.Match(exposition, $$"""^swarm_transport_dropped_total\{[^}]*reason="{{reason}}"[^}]*\} (\d+)""", RegexOptions.Multiline);
        return m.Success ? long.Parse(m.Groups[1].Value) : 0;
    }
}
