using System.Diagnostics.Metrics;
using Swarm.Telemetry;

namespace Swarm.Transport;

/// <summary>The transport's byte counters as an OpenTelemetry-readable instrument.</summary>
public static class TransportInstrument
{
    /// <summary>
    /// Creates <c>swarm.transport.io</c> (bytes, observable counter, <c>direction</c> = transmit | receive) on
    /// <paramref name="meter"/>, summing the payload byte counters of whatever transports <paramref name="counters"/> yields,
    /// and the secure channel's instruments (<see cref="TransportSecurityInstrument"/>).
    /// </summary>
    public static ObservableCounter<long> Create(Meter meter, Func<IEnumerable<TransportCounters>> counters)
    {
        ArgumentNullException.ThrowIfNull(meter);
        ArgumentNullException.ThrowIfNull(counters);
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
}
