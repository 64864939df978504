using System.Collections.Concurrent;
using Swarm.Coordinator.Telemetry;

namespace Swarm.Coordinator.Jobs;

/// <summary>
/// The table of recent jobs shown by status views — queued and running ones (running ones with their live
/// <see cref="JobProgress"/>), then the last finished ones — and the count of every <see cref="JobOutcome"/>. The counts
/// are the one record of outcomes: each is also added to the <c>swarm.jobs</c> metric here, so <c>/api/swarm</c>, the
/// dashboard, <c>swarm status</c> and <c>swarm_jobs_total</c> agree. Thread-safe.
/// </summary>
internal sealed class JobHistory(TimeProvider time)
{
    /// <summary>Finished jobs kept in the table; older ones are dropped.</summary>
    public const int Capacity = 200;

    /// <summary>Jobs listed by <see cref="Recent"/>.</summary>
    public const int Shown = 20;

    /// <summary><see cref="JobRecord.Error"/> of a job whose client went away.</summary>
    public const string ClientWentAway = "the client went away";

    private readonly ConcurrentDictionary<string, JobRecord> _records = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, JobProgress> _running = new(StringComparer.Ordinal);
    private readonly long[] _outcomes = new long[Enum.GetValues<JobOutcome>().Length];

    /// <summary>Jobs that ended with <paramref name="outcome"/> since start.</summary>
    public long Count(JobOutcome outcome) => Interlocked.Read(ref _outcomes[(int)outcome]);

    /// <summary>Waiting and running jobs first (running ones as they stand now), then the most recently finished, at most <see cref="Shown"/>.</summary>
    public IEnumerable<JobRecord> Recent => _records.Values
        .OrderByDescending(r => r.FinishedAt ?? DateTimeOffset.MaxValue).Take(Shown).Select(Live);

    /// <summary>A job was submitted and waits for admission.</summary>
    public void RecordQueued(string id, int promptTokens) =>
        _records[id] = new JobRecord(id, "queued", promptTokens, 0, null, null, 0, null, null);

    /// <summary>A job was admitted and generates; <paramref name="progress"/> is read whenever the table is.</summary>
    public void RecordRunning(string id, JobProgress progress)
    {
        _running[id] = progress;
        _records.AddOrUpdate(id, _ => throw new InvalidOperationException($"job {id} was never queued"), (_, r) => r with { State = "running" });
    }

    /// <summary>A job never ran: refused, timed out or cancelled in the queue. It is counted, not listed.</summary>
    public void RecordNeverRan(string id, JobOutcome outcome)
    {
        _records.TryRemove(id, out _);
        Counted(outcome);
    }

    /// <summary>A job finished with a result.</summary>
    public void RecordDone(string id, int promptTokens, int completionTokens, double ttftMs, double? tokensPerSecond, int recoveries)
    {
        Counted(JobOutcome.Completed);
        Finished(new JobRecord(id, "done", promptTokens, completionTokens, ttftMs, tokensPerSecond, recoveries, null, time.GetUtcNow()));
    }

    /// <summary>An admitted job failed, or its client went away (<see cref="JobOutcome.Cancelled"/>), at the figures of <paramref name="progress"/>.</summary>
    public void RecordEnded(string id, JobOutcome outcome, int promptTokens, JobProgress.Snapshot progress, string? error)
    {
        if (outcome is not (JobOutcome.Failed or JobOutcome.Cancelled))
            throw new ArgumentOutOfRangeException(nameof(outcome), outcome, "only failed and cancelled jobs end this way");
        Counted(outcome);
        string state = outcome == JobOutcome.Cancelled ? "cancelled" : "failed";
        Finished(new JobRecord(id, state, promptTokens, progress.Tokens, progress.TimeToFirstTokenMs, progress.TokensPerSecond,
            progress.Recoveries, outcome == JobOutcome.Cancelled ? ClientWentAway : error, time.GetUtcNow()));
    }

    private void Counted(JobOutcome outcome)
    {
        Interlocked.Increment(ref _outcomes[(int)outcome]);
        CoordinatorInstrumentation.JobEnded(outcome);
    }

    private JobRecord Live(JobRecord r)
    {
        if (r.State != "running" || !_running.TryGetValue(r.Id, out var progress)) return r;
        var now = progress.Read();
        return r with { CompletionTokens = now.Tokens, TtftMs = now.TimeToFirstTokenMs, TokensPerSecond = now.TokensPerSecond, Recoveries = now.Recoveries };
    }

    private void Finished(JobRecord record)
    {
        _records[record.Id] = record;
        _running.TryRemove(record.Id, out _);
        while (_records.Count > Capacity)
        {
            var oldest = _records.Values.Where(r => r.FinishedAt is not null).MinBy(r => r.FinishedAt);
            if (oldest is null) break;
            _records.TryRemove(oldest.Id, out _);
        }
    }
}
