using System.Diagnostics;
using System.Net;
using Swarm.Protocol;

namespace Swarm.Transport.Nat;

/// <summary>One way of making a hop, measured by <see cref="NatPathBench"/>.</summary>
/// <param name="Path">Direct, punched or relayed.</param>
/// <param name="SetupMs">Median time to make the link: the connection and its Noise handshake, the downstream punching meanwhile (punched, relayed).</param>
/// <param name="StepRoundTripMicroseconds">Median round trip of a decode step's message (one position's hidden state in f16) and its reply.</param>
/// <param name="Transfer">One 20 MB message (a long prompt's activations) over the link, all channels.</param>
public sealed record NatPathFigure(HopPath Path, double SetupMs, double StepRoundTripMicroseconds, TransferFigure Transfer)
{
    /// <summary>What one token pays on such a hop: the step message's one-way time (half the round trip).</summary>
    public double PerTokenHopMs => StepRoundTripMicroseconds / 2000;
}

/// <summary>
/// <c>swarm bench swarm --nat</c>: a node-to-node hop made directly, through a punched hole, and through the coordinator's
/// relay (<see cref="UdpRelay"/>), each between two encrypted transports on 127.0.0.1 — link set-up time, a decode step's
/// round trip (per-token latency) and a 20 MB transfer. On loopback there is no NAT, so a punched hop's packets take the
/// direct path once the punches are sent (which is what punching achieves); the relay adds a user-space forwarding hop in
/// each direction. Prints nothing and asserts nothing.
/// </summary>
public static class NatPathBench
{
    /// <summary>Measures the three paths.</summary>
    /// <param name="megabytes">Size of the large message in MB (10^6 bytes).</param>
    /// <param name="stepHiddenSize">Hidden size of the decode step whose round trip is timed.</param>
    /// <param name="cancellationToken">Stops the benchmark.</param>
    public static async Task<IReadOnlyList<NatPathFigure>> MeasureAsync(double megabytes = 20, int stepHiddenSize = 768, CancellationToken cancellationToken = default)
    {
        var payload = new byte[(int)(megabytes * 1_000_000) & ~1];
        new Random(1).NextBytes(payload);
        var step = new byte[stepHiddenSize * 2];
        new Random(2).NextBytes(step);
        using var relay = new UdpRelay(IPAddress.Loopback, TimeSpan.FromSeconds(30));
        var figures = new List<NatPathFigure>();
        foreach (var path in new[] { HopPath.Direct, HopPath.Punched, HopPath.Relayed })
            figures.Add(await MeasurePathAsync(path, relay, payload, step, cancellationToken).ConfigureAwait(false));
        return figures;
    }

    private static TransportOptions Options() => new() { Secret = "bench", ConnectBurst = 1000, ConnectRatePerSecond = 1000 };

    private static async Task<NatPathFigure> MeasurePathAsync(HopPath path, UdpRelay relay, byte[] payload, byte[] step, CancellationToken ct)
    {
        await using var downstream = LiteNetTransport.Start(Options());
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var acker = AckEverythingAsync(downstream, stop.Token);
        try
        {
            var setups = new List<double>();
            IPeer? peer = null;
            var clients = new List<LiteNetTransport>();
            try
            {
                for (int i = 0; i < 6; i++) // the first warms up JIT and the PSK; the last connection is measured further
                {
                    var upstream = LiteNetTransport.Start(Options());
                    clients.Add(upstream);
                    long start = Stopwatch.GetTimestamp();
                    (peer, var punching) = await LinkAsync(path, relay, upstream, downstream, ct).ConfigureAwait(false);
                    if (i > 0) setups.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
                    await punching.ConfigureAwait(false); // the remaining punches are harmless; none outlives the link's measurement
                }
                double roundTrip = await StepRoundTripAsync(peer!, step, ct).ConfigureAwait(false);
                var transfer = await TransferAsync(peer!, payload, ct).ConfigureAwait(false);
                setups.Sort();
                return new NatPathFigure(path, setups[setups.Count / 2], roundTrip, transfer);
            }
            finally
            {
                foreach (var c in clients) await c.DisposeAsync().ConfigureAwait(false);
            }
        }
        finally
        {
            await stop.CancelAsync().ConfigureAwait(false);
            try { await acker.ConfigureAwait(false); } catch (OperationCanceledException) { }
        }
    }

    /// <summary>
    /// Makes the link the way nodes do for <paramref name="path"/>: the downstream starts punching (toward the upstream, or
    /// the relay) and the upstream connects at the same time, pinning the downstream's key.
    /// </summary>
    private static async Task<(IPeer Peer, Task Punching)> LinkAsync(HopPath path, UdpRelay relay, ITransport upstream, ITransport downstream, CancellationToken ct)
    {
        var target = downstream.LocalEndPoint;
        Task punching = Task.CompletedTask;
        if (path == HopPath.Punched) punching = downstream.PunchAsync(upstream.LocalEndPoint, ct);
        else if (path == HopPath.Relayed)
        {
            var allocation = relay.Allocate(IPAddress.Loopback, IPAddress.Loopback);
            punching = downstream.PunchAsync(allocation.DownstreamSide, ct);
            target = allocation.UpstreamSide;
        }
        return (await upstream.ConnectAsync(target, downstream.LocalKey, ct).ConfigureAwait(false), punching);
    }

    private static async Task<double> StepRoundTripAsync(IPeer peer, byte[] hidden, CancellationToken ct)
    {
        var samples = new List<double>();
        for (int i = 0; i < 300; i++)
        {
            long start = Stopwatch.GetTimestamp();
            await peer.RequestAsync(Message(hidden), TimeSpan.FromSeconds(10), ct).ConfigureAwait(false);
            if (i >= 50) samples.Add(Stopwatch.GetElapsedTime(start).TotalMicroseconds);
        }
        samples.Sort();
        return samples[samples.Count / 2];
    }

    private static async Task<TransferFigure> TransferAsync(IPeer peer, byte[] payload, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        await peer.RequestAsync(Message(payload), TimeSpan.FromMinutes(5), ct).ConfigureAwait(false);
        double seconds = sw.Elapsed.TotalSeconds, mb = payload.Length / 1e6;
        return new TransferFigure(64, mb, seconds, mb / seconds);
    }

    private static Envelope Message(byte[] data) => Envelope.Create(new ForwardRequest
    {
        JobId = 1,
        SessionId = 1,
        Step = 1,
        Input = new WireTensor { DType = WireDType.F16, Shape = [1, 1, data.Length / 2], Data = data },
        Route = [new Hop { NodeId = 1, Endpoint = "127.0.0.1:1", Layers = new LayerRange(0, 1) }],
    });

    private static async Task AckEverythingAsync(ITransport server, CancellationToken ct)
    {
        await foreach (var m in server.Inbound.ReadAllAsync(ct).ConfigureAwait(false))
        {
            try { m.Peer.Send(m.Envelope.CreateReply(new Ack())); }
            catch (PeerDisconnectedException) { }
        }
    }
}
