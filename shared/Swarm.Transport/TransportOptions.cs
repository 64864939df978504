using System.Net;
using Swarm.Protocol;
using Swarm.Transport.Security;

namespace Swarm.Transport;

/// <summary>Settings of a <see cref="LiteNetTransport"/>. Check with <see cref="Validate"/> (done by <see cref="LiteNetTransport.Start"/>).</summary>
public sealed class TransportOptions
{
    /// <summary>Address to bind. Default: 127.0.0.1.</summary>
    public IPAddress BindAddress { get; set; } = IPAddress.Loopback;

    /// <summary>UDP port to bind; 0 picks a free one (read it back from <see cref="ITransport.LocalEndPoint"/>). Default: 0.</summary>
    public int Port { get; set; }

    /// <summary>
    /// Shared swarm secret. Set, it becomes the pre-shared key of the <c>Noise_XXpsk3</c> handshake every connection
    /// runs (<see cref="SwarmPsk"/>) and only peers with the same secret complete it; the secret is never sent, not
    /// even hashed. Null or empty runs <c>Noise_XX</c>: an open swarm where anyone may connect, identities are still
    /// proven and all traffic is still encrypted. Default: null.
    /// </summary>
    public string? Secret { get; set; }

    /// <summary>
    /// The static key pair this transport proves in every handshake (its identity; <see cref="IPeer.RemoteKey"/> on the
    /// other side). Null creates a fresh in-memory identity that the transport owns (tests, throw-away swarms); a given
    /// identity stays the caller's to dispose. Default: null.
    /// </summary>
    public NodeIdentity? Identity { get; set; }

    /// <summary>
    /// Decides on the proven static key of a peer that connected to us (not of peers we connect to — those are pinned
    /// per call of <see cref="ITransport.ConnectAsync(IPEndPoint, ReadOnlyMemory{byte}, CancellationToken)"/>): null to
    /// accept, else the reason for refusing, which both sides log. Called on the transport's poll thread; keep it fast.
    /// Default: null (accept every key that completes the handshake).
    /// </summary>
    public Func<ReadOnlyMemory<byte>, string?>? AuthorizeInbound { get; set; }

    /// <summary>How long the Noise handshake may take once the UDP connection is up before the connection is dropped. Default: 5 s.</summary>
    public TimeSpan HandshakeTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Connection attempts accepted per second from one source address, on average (token bucket refill). Default: 10.</summary>
    public double ConnectRatePerSecond { get; set; } = 10;

    /// <summary>Connection attempts one source address may make at once before <see cref="ConnectRatePerSecond"/> applies (bucket size). Default: 20.</summary>
    public int ConnectBurst { get; set; } = 20;

    /// <summary>Handshakes in progress at once; further connection attempts are dropped unanswered until one ends. Default: 256.</summary>
    public int MaxPendingHandshakes { get; set; } = 256;

    /// <summary>Settings of the record layer that protects every message after the handshake (key rotation, replay window).</summary>
    public RecordCipherOptions Records { get; set; } = new();

    /// <summary>
    /// False turns the handshake and the record layer off: messages travel in plaintext and peers are not
    /// authenticated. Exists only so <see cref="TransportBench"/> and tests can measure what encryption costs; no
    /// command-line flag or configuration key reaches it. Default: true.
    /// </summary>
    internal bool Encrypt { get; set; } = true;

    /// <summary>Clock of the connection rate limiter and handshake deadlines (tests). Default: <see cref="TimeProvider.System"/>.</summary>
    internal TimeProvider Time { get; set; } = TimeProvider.System;

    /// <summary>Protocol version announced and required at connect time. Default: <see cref="ProtocolInfo.Version"/>; change only in tests.</summary>
    public int ProtocolVersion { get; set; } = ProtocolInfo.Version;

    /// <summary>
    /// Reliable channels a large message is spread over (1–64). Each LiteNetLib channel has a window of 64 packets
    /// in flight, so throughput per round trip is about Channels × 64 × MTU. Default: 64.
    /// </summary>
    public int Channels { get; set; } = 64;

    /// <summary>Capacity of <see cref="ITransport.Inbound"/> in messages. Default: 1024.</summary>
    public int InboundCapacity { get; set; } = 1024;

    /// <summary>Largest message accepted or sent, in bytes. Default: <see cref="ProtocolInfo.DefaultMaxMessageBytes"/> (80 MiB).</summary>
    public int MaxMessageBytes { get; set; } = ProtocolInfo.DefaultMaxMessageBytes;

    /// <summary>
    /// Bound on memory held by partly received and not yet decoded messages, over all peers. A message that would
    /// exceed it is dropped and logged. Default: 512 MiB.
    /// </summary>
    public long MaxPendingInboundBytes { get; set; } = 512L * 1024 * 1024;

    /// <summary>A partly received message that makes no progress for this long is dropped. Default: 30 s.</summary>
    public TimeSpan ReassemblyTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>A peer silent for this long (no packets, not even pings) is declared disconnected. Default: 5 s.</summary>
    public TimeSpan DisconnectTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How long <see cref="ITransport.ConnectAsync(System.Net.IPEndPoint, System.Threading.CancellationToken)"/> keeps trying to reach a silent peer (in 250 ms attempts). Default: 5 s.</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// LiteNetLib's tick in milliseconds: the update of every peer (resends, pings, timeouts, MTU probes). Messages and
    /// acknowledgements do not wait for it (each flushes its own peer at once), so it sets only how soon a lost packet is
    /// resent after its resend delay, and its cost is O(peers) per tick. Default: 15 (LiteNetLib's own).
    /// </summary>
    public int UpdateTimeMs { get; set; } = 15;

    /// <summary>
    /// Longest wait of the transport's poll thread between rounds when nothing wakes it (default 5 ms; it also wakes for
    /// each tick); inbound datagrams and outbound commands wake it at once, and sends need no wake.
    /// </summary>
    public int PollIntervalMs { get; set; } = 5;

    /// <summary>
    /// Runs this transport's rounds on a shared <see cref="TransportPump"/> thread instead of a poll thread of its own: for
    /// load generators that run hundreds of transports in one process. The pump must outlive the transport. Default: null.
    /// </summary>
    public TransportPump? Pump { get; set; }

    /// <summary>Fixed MTU in bytes (576–1500 incl. LiteNetLib headers); 0 keeps LiteNetLib's default (1024). Default: 0.</summary>
    public int Mtu { get; set; }

    /// <summary>Returns every problem at once; empty when valid.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (BindAddress is null) errors.Add("BindAddress is required");
        if (Port is < 0 or > 65535) errors.Add($"Port {Port} is outside 0–65535");
        if (Channels is < 1 or > 64) errors.Add($"Channels {Channels} is outside 1–64");
        if (InboundCapacity < 1) errors.Add($"InboundCapacity {InboundCapacity} must be ≥ 1");
        if (MaxMessageBytes < 1024) errors.Add($"MaxMessageBytes {MaxMessageBytes} must be ≥ 1024");
        if (MaxPendingInboundBytes < MaxMessageBytes) errors.Add($"MaxPendingInboundBytes {MaxPendingInboundBytes} must be ≥ MaxMessageBytes {MaxMessageBytes}");
        if (ReassemblyTimeout <= TimeSpan.Zero) errors.Add("ReassemblyTimeout must be positive");
        if (DisconnectTimeout < TimeSpan.FromMilliseconds(100)) errors.Add("DisconnectTimeout must be ≥ 100 ms");
        if (ConnectTimeout < TimeSpan.FromMilliseconds(250)) errors.Add("ConnectTimeout must be ≥ 250 ms");
        if (UpdateTimeMs is < 1 or > 100) errors.Add($"UpdateTimeMs {UpdateTimeMs} is outside 1–100");
        if (PollIntervalMs is < 1 or > 1000) errors.Add($"PollIntervalMs {PollIntervalMs} is outside 1–1000");
        if (Mtu != 0 && Mtu is < 576 or > 1500) errors.Add($"Mtu {Mtu} must be 0 or within 576–1500");
        if (HandshakeTimeout < TimeSpan.FromMilliseconds(100)) errors.Add("HandshakeTimeout must be ≥ 100 ms");
        if (!(ConnectRatePerSecond > 0)) errors.Add($"ConnectRatePerSecond {ConnectRatePerSecond} must be positive");
        if (ConnectBurst < 1) errors.Add($"ConnectBurst {ConnectBurst} must be ≥ 1");
        if (MaxPendingHandshakes < 1) errors.Add($"MaxPendingHandshakes {MaxPendingHandshakes} must be ≥ 1");
        if (Records is null) errors.Add("Records is required");
        else errors.AddRange(Records.Validate());
        return errors;
    }
}
