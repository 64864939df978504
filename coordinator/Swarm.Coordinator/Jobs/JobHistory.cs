using System.Collections.Concurrent;

namespace Swarm.Coordinator.Jobs;

/// <summary>
/// The table of recent jobs shown by status views (queued and running ones, and the last finished ones), and the
/// counts of completed and failed jobs. Thread-safe.
/// </summary>
internal sealed class JobHistory(TimeProvider time)
{
    /// <summary>Finished jobs kept in the table; older ones are dropped.</summary>
    public const int Capacity = 200;

    /// <summary>Jobs listed by <see cref="Recent"/>.</summary>
    public const int Shown = 20;

    private readonly ConcurrentDictionary<string, JobRecord> _records = new(StringComparer.Ordinal);
    private long _completed, _failed;

    /// <summary>Jobs that finished with a result.</summary>
    public long Completed => Interlocked.Read(ref _completed);

    /// <summary>Jobs that were admitted and then failed or were cancelled.</summary>
    public long Failed => Interlocked.Read(ref _failed);

    /// <summary>Waiting and running jobs first, then the most recently finished, at most <see cref="Shown"/>.</summary>
    public IEnumerable<JobRecord> Recent => _records.Values.OrderByDescending(r => r.FinishedAt ?? DateTimeOffset.MaxValue).Take(Shown);

    /// <summary>A job was submitted and waits for admission.</summary>
    public void RecordQueued(string id, int promptTokens) =>
        _records[id] = new JobRecord(id, "queued", promptTokens, 0, null, null, 0, null, null);

    /// <summary>A job was admitted and generates.</summary>
    public void RecordRunning(string id) => _records.AddOrUpdate(id,
        _ => throw new InvalidOperationException($"job {id} was never queued"), (_, r) => r with { State = "running" });

    /// <summary>A job never ran (refused, timed out or cancelled in the queue): it is not listed.</summary>
    public void Forget(string id) => _records.TryRemove(id, out _);

    /// <summary>A job finished with a result.</summary>
    public void RecordDone(string id, int promptTokens, int completionTokens, double ttftMs, double? tokensPerSecond, int recoveries)
    {
        Interlocked.Increment(ref _completed);
        _records[id] = new JobRecord(id, "done", promptTokens, completionTokens, ttftMs, tokensPerSecond, recoveries, null, time.GetUtcNow());
        Trim();
    }

    /// <summary>An admitted job failed or was cancelled after <paramref name="completionTokens"/> tokens.</summary>
    public void RecordFailed(string id, int promptTokens, int completionTokens, double? ttftMs, int recoveries, string error)
    {
        Interlocked.Increment(ref _failed);
        _records[id] = new JobRecord(id, "failed", promptTokens, completionTokens, ttftMs, null, recoveries, error, time.GetUtcNow());
        Trim();
    }

    private void Trim()
    {
        while (_records.Count > Capacity)
        {
            var oldest = _records.Values.Where(r => r.FinishedAt is not null).MinBy(r => r.FinishedAt);
            if (oldest is null) break;
            _records.TryRemove(oldest.Id, out _);
        }
    }
}
