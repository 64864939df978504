namespace Swarm.Coordinator.Jobs;

/// <summary>
/// A job's live figures — tokens so far, time to first token, decode rate, route repairs — written by its step loop
/// as it generates and read at any moment by status views (the table of <see cref="JobHistory"/>). Thread-safe.
/// </summary>
internal sealed class JobProgress(TimeProvider time, long startedAt)
{
    private readonly Lock _gate = new();
    private int _tokens;
    private int _recoveries;
    private int _recomputed;
    private double? _firstTokenMs;
    private double _lastTokenMs;

    /// <summary>A snapshot of the figures.</summary>
    /// <param name="Tokens">Tokens generated so far.</param>
    /// <param name="TimeToFirstTokenMs">Milliseconds from submission to the first token; null before it.</param>
    /// <param name="TokensPerSecond">Decode rate between the first and the latest token; null before the second.</param>
    /// <param name="Recoveries">Route repairs so far.</param>
    /// <param name="RecomputedTokens">Tokens dropped and generated again because a node they went through was banned.</param>
    public readonly record struct Snapshot(int Tokens, double? TimeToFirstTokenMs, double? TokensPerSecond, int Recoveries, int RecomputedTokens = 0);

    /// <summary>Milliseconds since the job was submitted.</summary>
    public double ElapsedMs => time.GetElapsedTime(startedAt).TotalMilliseconds;

    /// <summary>
    /// Counts a new token now; returns the milliseconds since the previous one (since submission for the first).
    /// </summary>
    public double TokenGenerated()
    {
        double now = ElapsedMs;
        lock (_gate)
        {
            double gap = now - (_tokens == 0 ? 0 : _lastTokenMs);
            _tokens++;
            _firstTokenMs ??= now;
            _lastTokenMs = now;
            return gap;
        }
    }

    /// <summary>Counts a route repair; returns the repairs so far.</summary>
    public int Recovered()
    {
        lock (_gate) return ++_recoveries;
    }

    /// <summary>Takes back <paramref name="tokens"/> generated tokens that a ban made the job drop (they will be generated again).</summary>
    public void Rewound(int tokens)
    {
        lock (_gate)
        {
            _tokens -= tokens;
            _recomputed += tokens;
        }
    }

    /// <summary>The figures now.</summary>
    public Snapshot Read()
    {
        lock (_gate)
        {
            double? rate = _tokens > 1 && _lastTokenMs > _firstTokenMs ? (_tokens - 1) / ((_lastTokenMs - _firstTokenMs!.Value) / 1000) : null;
            return new Snapshot(_tokens, _firstTokenMs, rate, _recoveries, _recomputed);
        }
    }
}
