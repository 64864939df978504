using System.Diagnostics.Metrics;

namespace Swarm.Transport;

/// <summary>The secure channel's counters as OpenTelemetry-readable instruments (created by <see cref="TransportInstrument.Create"/>).</summary>
internal static class TransportSecurityInstrument
{
    /// <summary>Tag of the handshake counter: <c>established</c>, <c>failed</c>, <c>timed_out</c>.</summary>
    public const string OutcomeTag = "outcome";

    /// <summary>Tag of the refusal and rejection counters: why.</summary>
    public const string ReasonTag = "reason";

    /// <summary>
    /// Creates on <paramref name="meter"/>, summing whatever transports <paramref name="counters"/> yields:
    /// <c>swarm.transport.handshakes</c> (<c>outcome</c>), <c>swarm.transport.connections.refused</c>
    /// (<c>reason</c> = rate_limited | refused: attempts dropped unanswered by the per-address limit or the pending
    /// cap, and attempts refused for their request or a failed handshake) and <c>swarm.transport.records.rejected</c>
    /// (<c>reason</c> = unauthenticated | replayed | too_old | unknown_epoch | malformed).
    /// </summary>
    public static void Create(Meter meter, Func<IEnumerable<TransportCounters>> counters)
    {
        ArgumentNullException.ThrowIfNull(meter);
        ArgumentNullException.ThrowIfNull(counters);
        meter.CreateObservableCounter("swarm.transport.handshakes", () => Sum(counters(), OutcomeTag,
            ("established", c => c.HandshakesEstablished), ("failed", c => c.HandshakesFailed), ("timed_out", c => c.HandshakesTimedOut)),
            "{handshake}", "Noise handshakes of the swarm transport (both directions), by outcome.");
        meter.CreateObservableCounter("swarm.transport.connections.refused", () => Sum(counters(), ReasonTag,
            ("rate_limited", c => c.RateLimitedConnections), ("refused", c => c.RefusedConnections - c.RateLimitedConnections)),
            "{connection}", "Connection attempts refused: dropped unanswered over the rate limit, or refused (request, failed handshake).");
        meter.CreateObservableCounter("swarm.transport.records.rejected", () => Sum(counters(), ReasonTag,
            ("unauthenticated", c => c.Records.RejectedUnauthenticated), ("replayed", c => c.Records.RejectedReplayed),
            ("too_old", c => c.Records.RejectedTooOld), ("unknown_epoch", c => c.Records.RejectedUnknownEpoch),
            ("malformed", c => c.Records.RejectedMalformed)),
            "{record}", "Records of the secure channel dropped: altered or forged, replayed, behind the replay window, of an unknown key epoch, malformed.");
    }

    private static Measurement<long>[] Sum(IEnumerable<TransportCounters> counters, string tag, params (string Value, Func<TransportCounters, long> Read)[] series)
    {
        var all = counters.ToList();
        return series.Select(s => new Measurement<long>(all.Sum(s.Read), new KeyValuePair<string, object?>(tag, s.Value))).ToArray();
    }
}
