using System.Net;
using Microsoft.Extensions.Logging;
using Swarm.Transport.Security;

namespace Swarm.Transport;

/// <summary>
/// Counts and logs what a transport refuses or drops — events a stranger or a misbehaving peer can provoke at will.
/// Every event is counted (<see cref="TransportCounters"/>, and from there the <c>swarm.transport</c> metrics); the log
/// gets the first event of each kind and then one line per <see cref="RepeatedLogLimiter.Interval"/> with the count held
/// back, so a flood of refused connects or forged records costs a few log lines, not one each. Thread-safe.
/// </summary>
internal sealed class TransportDiagnostics(ILogger logger, TransportCounters counters)
{
    private readonly RepeatedLogLimiter _repeated = new();

    /// <summary>The transport's logger.</summary>
    public ILogger Logger => logger;

    /// <summary>A connection attempt refused: answered with <paramref name="reason"/>, or, when <paramref name="dropped"/>, not answered at all.</summary>
    /// <param name="kind">What was wrong, to aggregate by (e.g. "handshake failed").</param>
    public void Refused(IPEndPoint from, bool dropped, string kind, string reason)
    {
        Interlocked.Increment(ref counters._refusedConnections);
        if (dropped) Interlocked.Increment(ref counters._rateLimited);
        if (_repeated.ShouldLog(logger, $"refused connection: {kind}: {Shape(reason)}")) TransportLog.Refused(logger, from, reason);
    }

    /// <summary>
    /// The reason without what varies between occurrences of one cause (fingerprints, numbers), cut short: refusals of
    /// different causes — a wrong secret, a key nobody vouched for — each get their first line; the limiter caps kinds.
    /// </summary>
    internal static string Shape(string reason)
    {
        var text = System.Text.RegularExpressions.Regex.Replace(reason, @"swarm:[a-z2-7]+|[0-9]+", "#");
        return text.Length <= 48 ? text : text[..48];
    }

    /// <summary>A frame or message that is not what the protocol allows.</summary>
    public void Malformed(IPEndPoint from, string error)
    {
        Interlocked.Increment(ref counters._malformed);
        if (_repeated.ShouldLog(logger, "malformed message")) TransportLog.Malformed(logger, from, error);
    }

    /// <summary>A record that did not open (the record layer counted it already).</summary>
    public void RecordDropped(IPEndPoint from, string fingerprint, OpenResult result)
    {
        if (_repeated.ShouldLog(logger, "dropped record: " + result)) TransportLog.RecordDropped(logger, from, fingerprint, Describe(result));
    }

    /// <summary>A partial or complete message dropped to stay within the memory budget, or stalled.</summary>
    public void ReassemblyDropped(IPEndPoint from, string reason)
    {
        Interlocked.Increment(ref counters._droppedReassembly);
        if (_repeated.ShouldLog(logger, "dropped message")) TransportLog.ReassemblyDropped(logger, from, reason);
    }

    /// <summary>A message dropped because the inbound queue was full.</summary>
    public void InboundFull(int capacity, string kind, long messageId, IPEndPoint from)
    {
        Interlocked.Increment(ref counters._droppedFull);
        if (_repeated.ShouldLog(logger, "inbound queue full")) TransportLog.InboundFull(logger, capacity, kind, messageId, from);
    }

    /// <summary>
    /// A connection that ended before it was usable: one we opened, or (<paramref name="inbound"/>) one whose initiator
    /// went away or refused us during the handshake — a connection attempt that did not succeed, counted as refused.
    /// </summary>
    public void ConnectFailed(IPEndPoint remote, bool inbound, string reason)
    {
        if (inbound) Interlocked.Increment(ref counters._refusedConnections);
        if (!_repeated.ShouldLog(logger, inbound ? "aborted handshake" : "failed connect")) return;
        if (inbound) TransportLog.HandshakeAborted(logger, remote, reason);
        else TransportLog.ConnectFailed(logger, remote, reason);
    }

    private static string Describe(OpenResult result) => result switch
    {
        OpenResult.Unauthenticated => "it did not authenticate (altered in transit, or forged)",
        OpenResult.Replayed => "its counter was received before (a replay or a duplicate)",
        OpenResult.TooOld => "its counter is behind the replay window",
        OpenResult.UnknownEpoch => "its key epoch is retired or too far ahead",
        _ => "it is not a record",
    };
}
