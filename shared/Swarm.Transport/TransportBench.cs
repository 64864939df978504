using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Swarm.Protocol;

namespace Swarm.Transport;

/// <summary>Throughput of one large transfer with a given number of channels.</summary>
/// <param name="Channels">Reliable channels the message was spread over.</param>
/// <param name="Megabytes">Payload size in MB (10^6 bytes).</param>
/// <param name="Seconds">From sending the request to receiving the receiver's acknowledgement (includes one RTT).</param>
/// <param name="MegabytesPerSecond">Megabytes / Seconds.</param>
public sealed record TransferFigure(int Channels, double Megabytes, double Seconds, double MegabytesPerSecond);

/// <summary>What the secure channel costs, measured with encryption on and off (the off switch exists only for this).</summary>
/// <param name="HandshakeMs">Median time of ConnectAsync with the Noise handshake (UDP connect plus two round trips of handshake).</param>
/// <param name="PlainConnectMs">Median time of ConnectAsync without it (UDP connect only).</param>
/// <param name="StepRoundTripMicroseconds">Median round trip of a decode step's message (a [1,1,hidden] f16 tensor) and its reply, encrypted.</param>
/// <param name="PlainStepRoundTripMicroseconds">The same without encryption.</param>
/// <param name="Transfer">The large transfer on loopback (all channels), encrypted.</param>
/// <param name="PlainTransfer">The same without encryption.</param>
/// <param name="PskDerivationMs">Time to derive the PSK from a swarm secret (Argon2id, once per process and secret).</param>
public sealed record EncryptionCost(
    double HandshakeMs,
    double PlainConnectMs,
    double StepRoundTripMicroseconds,
    double PlainStepRoundTripMicroseconds,
    TransferFigure Transfer,
    TransferFigure PlainTransfer,
    double PskDerivationMs)
{
    /// <summary>What encryption adds to one message of a decode step (half the round-trip difference).</summary>
    public double PerMessageMicroseconds => (StepRoundTripMicroseconds - PlainStepRoundTripMicroseconds) / 2;
}

/// <summary>Figures of <see cref="TransportBench.MeasureAsync"/>.</summary>
/// <param name="RttMs">Emulated round-trip time.</param>
/// <param name="LatencyMethod">How the RTT was emulated.</param>
/// <param name="Transfers">One figure per channel count, at <paramref name="RttMs"/>.</param>
/// <param name="LoopbackRoundTripMicroseconds">Median round trip of a small request/reply on plain loopback (no added delay).</param>
/// <param name="LoopbackTransfer">The same large transfer on plain loopback with all channels.</param>
/// <param name="Encryption">Encryption on versus off.</param>
public sealed record TransportBenchResult(
    int RttMs,
    string LatencyMethod,
    IReadOnlyList<TransferFigure> Transfers,
    double LoopbackRoundTripMicroseconds,
    TransferFigure LoopbackTransfer,
    EncryptionCost Encryption);

/// <summary>
/// Transfer benchmark for <c>swarm bench swarm</c>: a large message (default 20 MB, a 2048-token prefill at hidden
/// 5120 in f16) over 127.0.0.1 with an emulated RTT (default 50 ms), once on 1 channel and once spread over many,
/// plus small-message round-trip latency on plain loopback, and what the secure channel costs: handshake time, a decode
/// step's round trip and the large transfer with encryption on and off. Prints nothing and asserts nothing.
/// </summary>
public static class TransportBench
{
    /// <summary>Explains why a user-space proxy emulates the latency.</summary>
    public const string LatencyMethodDescription =
        "user-space UDP delay proxy on 127.0.0.1 (fixed one-way delay each direction, no loss, no rate limit); " +
        "LiteNetLib's SimulateLatency is compiled out of the NuGet build and this kernel has no netem qdisc";

    /// <summary>Runs the benchmark.</summary>
    /// <param name="megabytes">Size of the transferred message in MB (10^6 bytes).</param>
    /// <param name="rttMs">Emulated round-trip time in milliseconds.</param>
    /// <param name="channelCounts">Channel counts to compare; default 1 and 64.</param>
    /// <param name="stepHiddenSize">Hidden size of the decode step whose round trip is timed (default 768, pythia-160m).</param>
    /// <param name="logger">Optional logger for the transports.</param>
    /// <param name="cancellationToken">Stops the benchmark.</param>
    public static async Task<TransportBenchResult> MeasureAsync(
        double megabytes = 20,
        int rttMs = 50,
        IReadOnlyList<int>? channelCounts = null,
        int stepHiddenSize = 768,
        ILogger? logger = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(megabytes, 0);
        ArgumentOutOfRangeException.ThrowIfNegative(rttMs);
        channelCounts ??= [1, 64];
        var payload = new byte[(int)(megabytes * 1_000_000) & ~1];
        new Random(1).NextBytes(payload);

        var figures = new List<TransferFigure>();
        foreach (int channels in channelCounts)
            figures.Add(await MeasureTransferAsync(payload, channels, TimeSpan.FromMilliseconds(rttMs / 2.0), encrypt: true, logger, cancellationToken).ConfigureAwait(false));
        var loopback = await MeasureTransferAsync(payload, 64, TimeSpan.Zero, encrypt: true, logger, cancellationToken).ConfigureAwait(false);
        double rttUs = await MeasureRoundTripAsync(SmallMessage, encrypt: true, logger, cancellationToken).ConfigureAwait(false);
        var step = StepMessage(stepHiddenSize);
        var encryption = new EncryptionCost(
            await MeasureConnectAsync(encrypt: true, logger, cancellationToken).ConfigureAwait(false),
            await MeasureConnectAsync(encrypt: false, logger, cancellationToken).ConfigureAwait(false),
            await MeasureRoundTripAsync(step, encrypt: true, logger, cancellationToken).ConfigureAwait(false),
            await MeasureRoundTripAsync(step, encrypt: false, logger, cancellationToken).ConfigureAwait(false),
            loopback,
            await MeasureTransferAsync(payload, 64, TimeSpan.Zero, encrypt: false, logger, cancellationToken).ConfigureAwait(false),
            MeasurePskDerivation());
        return new TransportBenchResult(rttMs, LatencyMethodDescription, figures, rttUs, loopback, encryption);
    }

    /// <summary>One Argon2id derivation of a secret not derived before in this process (the memo would hide it).</summary>
    private static double MeasurePskDerivation()
    {
        long start = Stopwatch.GetTimestamp();
        Security.SwarmPsk.Derive($"bench-{Guid.NewGuid():N}");
        return Stopwatch.GetElapsedTime(start).TotalMilliseconds;
    }

    private static TransportOptions Options(bool encrypt, int channels = 64) => new()
    {
        Channels = channels, Secret = "bench", Encrypt = encrypt, ConnectBurst = 1000, ConnectRatePerSecond = 1000,
    };

    private static Envelope SmallMessage() => Envelope.Create(new Heartbeat { State = NodeReadiness.Ready });

    /// <summary>A decode step as it travels between stages: one position's hidden state in f16.</summary>
    private static Func<Envelope> StepMessage(int hidden)
    {
        var data = new byte[hidden * 2];
        new Random(2).NextBytes(data);
        return () => Envelope.Create(new ForwardRequest
        {
            JobId = 1,
            SessionId = 1,
            Step = 1,
            Input = new WireTensor { DType = WireDType.F16, Shape = [1, 1, hidden], Data = data },
            Route = [new Hop { NodeId = 1, Endpoint = "127.0.0.1:1", Layers = new LayerRange(0, 1) }],
        });
    }

    /// <summary>Median time of ConnectAsync to a listening transport, each from a fresh client (identity created beforehand).</summary>
    private static async Task<double> MeasureConnectAsync(bool encrypt, ILogger? logger, CancellationToken ct)
    {
        await using var server = LiteNetTransport.Start(Options(encrypt), logger);
        var samples = new List<double>();
        for (int i = 0; i < 21; i++)
        {
            await using var client = LiteNetTransport.Start(Options(encrypt), logger);
            long start = Stopwatch.GetTimestamp();
            await client.ConnectAsync(server.LocalEndPoint, ct).ConfigureAwait(false);
            if (i > 0) samples.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds); // the first warms up JIT and the PSK
        }
        samples.Sort();
        return samples[samples.Count / 2];
    }

    private static async Task<TransferFigure> MeasureTransferAsync(byte[] payload, int channels, TimeSpan oneWay, bool encrypt, ILogger? logger, CancellationToken ct)
    {
        await using var server = LiteNetTransport.Start(Options(encrypt, channels), logger);
        await using var client = LiteNetTransport.Start(Options(encrypt, channels), logger);
        using var proxy = oneWay > TimeSpan.Zero ? new UdpDelayProxy(server.LocalEndPoint, oneWay) : null;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var acker = AckEverythingAsync(server, stop.Token);
        try
        {
            var peer = await client.ConnectAsync(proxy?.FrontEndPoint ?? server.LocalEndPoint, ct).ConfigureAwait(false);
            for (int i = 0; i < 5; i++) // warm up: connection, RTT estimate, JIT
                await peer.RequestAsync(Envelope.Create(new Ack()), TimeSpan.FromSeconds(10), ct).ConfigureAwait(false);
            var request = Envelope.Create(new ForwardRequest
            {
                JobId = 1,
                SessionId = 1,
                Input = new WireTensor { DType = WireDType.F16, Shape = [1, 1, payload.Length / 2], Data = payload },
                Route = [new Hop { NodeId = 1, Endpoint = server.LocalEndPoint.ToString(), Layers = new LayerRange(0, 1) }],
            });
            var sw = Stopwatch.StartNew();
            await peer.RequestAsync(request, TimeSpan.FromMinutes(5), ct).ConfigureAwait(false);
            double seconds = sw.Elapsed.TotalSeconds;
            double mb = payload.Length / 1e6;
            return new TransferFigure(channels, mb, seconds, mb / seconds);
        }
        finally
        {
            await stop.CancelAsync().ConfigureAwait(false);
            try { await acker.ConfigureAwait(false); } catch (OperationCanceledException) { }
        }
    }

    private static async Task<double> MeasureRoundTripAsync(Func<Envelope> message, bool encrypt, ILogger? logger, CancellationToken ct)
    {
        await using var server = LiteNetTransport.Start(Options(encrypt), logger);
        await using var client = LiteNetTransport.Start(Options(encrypt), logger);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var acker = AckEverythingAsync(server, stop.Token);
        try
        {
            var peer = await client.ConnectAsync(server.LocalEndPoint, ct).ConfigureAwait(false);
            var samples = new List<double>();
            for (int i = 0; i < 300; i++)
            {
                long start = Stopwatch.GetTimestamp();
                await peer.RequestAsync(message(), TimeSpan.FromSeconds(10), ct).ConfigureAwait(false);
                if (i >= 50) samples.Add(Stopwatch.GetElapsedTime(start).TotalMicroseconds);
            }
            samples.Sort();
            return samples[samples.Count / 2];
        }
        finally
        {
            await stop.CancelAsync().ConfigureAwait(false);
            try { await acker.ConfigureAwait(false); } catch (OperationCanceledException) { }
        }
    }

    private static async Task AckEverythingAsync(ITransport server, CancellationToken ct)
    {
        await foreach (var m in server.Inbound.ReadAllAsync(ct).ConfigureAwait(false))
        {
            try { m.Peer.Send(m.Envelope.CreateReply(new Ack())); }
            catch (PeerDisconnectedException) { }
        }
    }
}
