using System.Net;

namespace Swarm.Transport;

/// <summary>What to do with a connection request.</summary>
internal enum AdmissionVerdict
{
    /// <summary>Accept the UDP connection; the handshake decides the rest.</summary>
    Accept,
    /// <summary>Drop it without an answer (over the rate limit or the pending-handshake cap): the cheapest refusal, and nothing to amplify.</summary>
    Drop,
    /// <summary>Refuse it with a reason the peer is told (malformed request, another protocol version or mode).</summary>
    Refuse,
}

/// <summary>
/// Decides on connection requests before any cryptography runs, cheapest check first: the per-address token bucket
/// (<see cref="ConnectRateLimiter"/>), the cap on handshakes in progress, then the request's format and protocol
/// version (<see cref="ConnectRequest"/>). Thread-safe.
/// </summary>
internal sealed class ConnectionAdmission
{
    private readonly TransportOptions _options;
    private readonly ConnectRateLimiter _limiter;
    private long _lastSweep;

    public ConnectionAdmission(TransportOptions options)
    {
        _options = options;
        _limiter = new ConnectRateLimiter(options.ConnectRatePerSecond, options.ConnectBurst, options.Time);
        _lastSweep = options.Time.GetTimestamp();
    }

    /// <param name="from">The request's source.</param>
    /// <param name="request">The request's payload.</param>
    /// <param name="pendingHandshakes">Handshakes in progress now.</param>
    /// <param name="reason">Why it is not accepted (for the log, and for the peer when refused).</param>
    public AdmissionVerdict Decide(IPEndPoint from, ReadOnlySpan<byte> request, int pendingHandshakes, out string reason)
    {
        if (!_limiter.TryAcquire(from.Address))
        {
            reason = $"rate limited: more than {_limiter.Burst} connection attempts at once, or {_limiter.RatePerSecond:0.#}/s, from {ConnectRateLimiter.KeyOf(from.Address)}";
            return AdmissionVerdict.Drop;
        }
        if (pendingHandshakes >= _options.MaxPendingHandshakes)
        {
            reason = $"{pendingHandshakes} handshakes already in progress (limit {_options.MaxPendingHandshakes})";
            return AdmissionVerdict.Drop;
        }
        reason = ConnectRequest.Check(request, _options.ProtocolVersion, _options.Encrypt) ?? "";
        return reason.Length == 0 ? AdmissionVerdict.Accept : AdmissionVerdict.Refuse;
    }

    /// <summary>Forgets addresses whose bucket has refilled; does the work at most once a second however often it is called. Poll thread.</summary>
    public void Sweep()
    {
        if (_options.Time.GetElapsedTime(_lastSweep) < TimeSpan.FromSeconds(1)) return;
        _lastSweep = _options.Time.GetTimestamp();
        _limiter.Sweep();
    }
}
