using System.Text.Json;
using Swarm.Transport.Nat;

namespace Swarm.Cli.Bench;

/// <summary><c>swarm bench swarm --nat</c>: a hop made directly, punched and relayed — set-up, per-token latency, 20 MB throughput.</summary>
internal static class NatBench
{
    /// <summary>Runs <see cref="NatPathBench"/> and prints its figures (a table, or JSON).</summary>
    public static async Task<int> RunAsync(bool json, Action<string> log, CancellationToken ct)
    {
        log("a hop between two encrypted transports on loopback: direct, punched, relayed through the coordinator's relay…");
        var figures = await NatPathBench.MeasureAsync(20, 768, ct);
        if (json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                hops = figures.Select(f => new
                {
                    path = f.Path.ToString().ToLowerInvariant(),
                    setup_ms = Math.Round(f.SetupMs, 2),
                    step_round_trip_us = Math.Round(f.StepRoundTripMicroseconds, 1),
                    per_token_hop_ms = Math.Round(f.PerTokenHopMs, 3),
                    transfer_20mb_mb_per_s = Math.Round(f.Transfer.MegabytesPerSecond, 2),
                    transfer_20mb_s = Math.Round(f.Transfer.Seconds, 3),
                }),
                method = "two encrypted transports on 127.0.0.1; punched = the downstream punches, then the upstream connects (no NAT on "
                    + "loopback: the packets then take the direct path); relayed = both ends through a UdpRelay allocation; step = a decode step's "
                    + "[1,1,768] f16 message and its reply (median of 250); per-token hop = half of it",
            }));
            return 0;
        }
        Console.WriteLine("one node-to-node hop on loopback, encrypted (decode step: [1,1,768] f16; transfer: one 20 MB message)");
        Console.WriteLine($"{"path",8} {"set-up ms",10} {"step RTT µs",12} {"per-token hop ms",17} {"20 MB MB/s",11}");
        foreach (var f in figures)
            Console.WriteLine($"{f.Path.ToString().ToLowerInvariant(),8} {f.SetupMs,10:F2} {f.StepRoundTripMicroseconds,12:F0} {f.PerTokenHopMs,17:F3} {f.Transfer.MegabytesPerSecond,11:F1}");
        Console.WriteLine("(no NAT on loopback: a punched hop's packets take the direct path once punched; a relayed hop crosses the relay's user-space forwarder both ways)");
        return 0;
    }
}
