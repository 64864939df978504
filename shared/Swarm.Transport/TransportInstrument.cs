using System.Diagnostics.Metrics;
using Swarm.Telemetry;

namespace Swarm.Transport;

/// <summary>The transport's counters as OpenTelemetry-readable instruments.</summary>
public static class TransportInstrument
{
    /// <summary>Tag of <c>swarm.transport.dropped</c>: why the input was dropped.</summary>
    public const string ReasonTag = "reason";

    /// <summary>
    /// Creates on <paramref name="meter"/>, summing whatever transports <paramref name="counters"/> yields:
    /// <c>swarm.transport.io</c> (bytes, observable counter, <c>direction</c> = transmit | receive),
    /// <c>swarm.transport.dropped</c> (observable counter, <c>reason</c> = invalid_datagram | refused_connection |
    /// malformed_message | reassembly_dropped | inbound_full) — input dropped before it reached the process, each one
    /// counted although repeated warnings are logged once per interval — and the secure channel's instruments
    /// (<see cref="TransportSecurityInstrument"/>).
    /// </summary>
    /// <returns>The <c>swarm.transport.io</c> instrument.</returns>
    public static ObservableCounter<long> Create(Meter meter, Func<IEnumerable<TransportCounters>> counters)
    {
        ArgumentNullException.ThrowIfNull(meter);
        ArgumentNullException.ThrowIfNull(counters);
        meter.CreateObservableCounter("swarm.transport.dropped", () => Dropped(counters()), "{event}",
            "Input the transport dropped, by reason: invalid datagrams, refused connection requests, malformed messages, " +
            "partial messages dropped by reassembly, messages dropped because the inbound queue was full.");
        TransportSecurityInstrument.Create(meter, counters);
        return meter.CreateObservableCounter("swarm.transport.io", () =>
        {
            long sent = 0, received = 0;
            foreach (var c in counters())
            {
                sent += c.BytesSent;
                received += c.BytesReceived;
            }
            return new[]
            {
                new Measurement<long>(sent, new KeyValuePair<string, object?>(SwarmTelemetry.DirectionTag, "transmit")),
                new Measurement<long>(received, new KeyValuePair<string, object?>(SwarmTelemetry.DirectionTag, "receive")),
            };
        }, "By", "Payload bytes of complete messages sent and received over the swarm transport.");
    }

    private static Measurement<long>[] Dropped(IEnumerable<TransportCounters> counters)
    {
        long refused = 0, malformed = 0, reassembly = 0, full = 0;
        foreach (var c in counters)
        {
            refused += c.RefusedConnections;
            malformed += c.Malformed;
            reassembly += c.DroppedReassembly;
            full += c.DroppedInboundFull;
        }
        return
        [
            Reason(LiteNetLibLog.InvalidDatagrams, "invalid_datagram"), // process-wide: LiteNetLib's hook is
            Reason(refused, "refused_connection"),
            Reason(malformed, "malformed_message"),
            Reason(reassembly, "reassembly_dropped"),
            Reason(full, "inbound_full"),
        ];
    }

    private static Measurement<long> Reason(long value, string reason) =>
        new(value, new KeyValuePair<string, object?>(ReasonTag, reason));
}
