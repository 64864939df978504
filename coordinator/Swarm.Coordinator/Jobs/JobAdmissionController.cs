using System.Globalization;
using Swarm.Coordinator.Placement;
using Swarm.Protocol;

namespace Swarm.Coordinator.Jobs;

/// <summary>What happened to a job at the admission gate.</summary>
internal enum AdmissionOutcome
{
    /// <summary>The job may run now (it holds a slot until <see cref="JobAdmissionController.Complete"/>).</summary>
    Started,
    /// <summary>The job waits for a slot or for coverage.</summary>
    Queued,
    /// <summary>The queue is full; the job is refused at once.</summary>
    RejectedQueueFull,
    /// <summary>The job waited <see cref="JobAdmissionOptions.QueueTimeout"/> and gave up.</summary>
    TimedOut,
}

/// <summary>An admission decision for one job.</summary>
/// <param name="JobId">The job.</param>
/// <param name="Outcome">What happened.</param>
/// <param name="Error">For refusals and time-outs, a message for the client; otherwise null.</param>
/// <param name="Uncovered">For time-outs caused by missing layers, those layers; otherwise empty.</param>
internal sealed record AdmissionEvent(string JobId, AdmissionOutcome Outcome, string? Error, IReadOnlyList<LayerRange> Uncovered)
{
    /// <summary>HTTP status to answer with: 429 when the queue is full, 503 on time-out, 200 otherwise.</summary>
    public int SuggestedHttpStatus => Outcome switch
    {
        AdmissionOutcome.RejectedQueueFull => 429,
        AdmissionOutcome.TimedOut => 503,
        _ => 200,
    };
}

/// <summary>
/// Pure queue and concurrency policy: at most <see cref="JobAdmissionOptions.MaxConcurrentJobs"/> jobs run, a bounded
/// FIFO queue holds the rest, and nothing starts while layers are uncovered. The service reports submissions,
/// completions and coverage changes, calls <see cref="Tick"/> at <see cref="NextDeadline"/>, and acts on the returned
/// events. Thread-safe; no I/O.
/// </summary>
internal sealed class JobAdmissionController
{
    private readonly Lock _gate = new();
    private readonly JobAdmissionOptions _options;
    private readonly TimeProvider _time;
    private readonly HashSet<string> _running = new(StringComparer.Ordinal);
    private readonly LinkedList<(string Id, DateTimeOffset Deadline)> _queue = new();
    private readonly Dictionary<string, LinkedListNode<(string Id, DateTimeOffset Deadline)>> _queued = new(StringComparer.Ordinal);
    private IReadOnlyList<LayerRange> _uncovered = [];

    /// <summary>Creates the controller; the swarm is assumed covered until <see cref="UpdateCoverage"/> says otherwise.</summary>
    /// <exception cref="ArgumentException">The options are invalid (all problems listed).</exception>
    public JobAdmissionController(JobAdmissionOptions options, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate();
        if (errors.Count > 0) throw new ArgumentException("invalid job admission options: " + string.Join("; ", errors));
        _options = options;
        _time = time;
    }

    /// <summary>Jobs holding a slot.</summary>
    public int Running { get { lock (_gate) return _running.Count; } }

    /// <summary>Jobs waiting.</summary>
    public int Queued { get { lock (_gate) return _queue.Count; } }

    /// <summary>The earliest queue deadline, when <see cref="Tick"/> should next be called; null when nobody waits.</summary>
    public DateTimeOffset? NextDeadline { get { lock (_gate) return _queue.First?.Value.Deadline; } }

    /// <summary>A new job arrives: it starts, queues, or is refused.</summary>
    /// <exception cref="ArgumentException">A job with this id is already known.</exception>
    public AdmissionEvent Submit(string jobId)
    {
        ArgumentNullException.ThrowIfNull(jobId);
        lock (_gate)
        {
            if (_running.Contains(jobId) || _queued.ContainsKey(jobId))
                throw new ArgumentException($"job '{jobId}' was already submitted", nameof(jobId));
            if (_queue.Count == 0 && CanStart())
            {
                _running.Add(jobId);
                return new AdmissionEvent(jobId, AdmissionOutcome.Started, null, []);
            }
            if (_queue.Count >= _options.MaxQueueLength)
            {
                if (_uncovered.Count > 0)
                    return new AdmissionEvent(jobId, AdmissionOutcome.RejectedQueueFull,
                        $"no route: {LayerRange.DescribeAll(_uncovered)} not served by any node, and the queue is full", _uncovered);
                return new AdmissionEvent(jobId, AdmissionOutcome.RejectedQueueFull,
                    string.Create(CultureInfo.InvariantCulture,
                        $"the coordinator is at capacity: {_running.Count} jobs running and {_queue.Count} queued; retry later"), []);
            }
            _queued[jobId] = _queue.AddLast((jobId, _time.GetUtcNow() + _options.QueueTimeout));
            return new AdmissionEvent(jobId, AdmissionOutcome.Queued, null, []);
        }
    }

    /// <summary>A running job finished (or failed): its slot goes to the next queued jobs, which are returned as Started.</summary>
    public IReadOnlyList<AdmissionEvent> Complete(string jobId)
    {
        lock (_gate)
        {
            if (!_running.Remove(jobId)) return [];
            return StartQueued();
        }
    }

    /// <summary>
    /// The client went away: a queued job is dropped, a running one frees its slot (returns jobs that start because of it).
    /// </summary>
    public IReadOnlyList<AdmissionEvent> Cancel(string jobId)
    {
        lock (_gate)
        {
            if (_queued.Remove(jobId, out var node))
            {
                _queue.Remove(node);
                return [];
            }
            return _running.Remove(jobId) ? StartQueued() : [];
        }
    }

    /// <summary>Coverage changed (from the placement's <see cref="CoverageReport.Uncovered"/>); returns jobs that can start now.</summary>
    public IReadOnlyList<AdmissionEvent> UpdateCoverage(IReadOnlyList<LayerRange> uncovered)
    {
        ArgumentNullException.ThrowIfNull(uncovered);
        lock (_gate)
        {
            _uncovered = [.. uncovered];
            return StartQueued();
        }
    }

    /// <summary>Fails every queued job whose deadline has passed, naming the uncovered layers when that is why it waited.</summary>
    public IReadOnlyList<AdmissionEvent> Tick()
    {
        var now = _time.GetUtcNow();
        lock (_gate)
        {
            var events = new List<AdmissionEvent>();
            while (_queue.First is { } first && first.Value.Deadline <= now)
            {
                _queue.RemoveFirst();
                _queued.Remove(first.Value.Id);
                events.Add(TimedOut(first.Value.Id));
            }
            return events;
        }
    }

    private bool CanStart() => _uncovered.Count == 0 && _running.Count < _options.MaxConcurrentJobs;

    private List<AdmissionEvent> StartQueued()
    {
        var events = new List<AdmissionEvent>();
        while (_queue.First is { } first && CanStart())
        {
            _queue.RemoveFirst();
            _queued.Remove(first.Value.Id);
            _running.Add(first.Value.Id);
            events.Add(new AdmissionEvent(first.Value.Id, AdmissionOutcome.Started, null, []));
        }
        return events;
    }

    private AdmissionEvent TimedOut(string id)
    {
        string waited = string.Create(CultureInfo.InvariantCulture, $"{_options.QueueTimeout.TotalSeconds:0.###} s");
        if (_uncovered.Count > 0)
        {
            string layers = LayerRange.DescribeAll(_uncovered);
            bool single = _uncovered.Count == 1 && _uncovered[0].Count == 1;
            return new AdmissionEvent(id, AdmissionOutcome.TimedOut,
                $"no route: {layers} {(single ? "is" : "are")} not served by any node (waited {waited})", _uncovered);
        }
        return new AdmissionEvent(id, AdmissionOutcome.TimedOut,
            string.Create(CultureInfo.InvariantCulture, $"timed out after {waited} waiting for one of {_options.MaxConcurrentJobs} job slots"), []);
    }
}
