using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Swarm.Protocol;

namespace Swarm.Coordinator.Jobs;

/// <summary>
/// The awaitable front of <see cref="JobAdmissionController"/>: a job awaits <see cref="AdmitAsync"/> until it holds a
/// slot. Waiting jobs are resolved when a slot frees, when coverage changes (read from <c>uncovered</c> every tick) and
/// when their queue deadline passes (checked every tick).
/// </summary>
internal sealed partial class JobAdmissionGate : IDisposable
{
    private readonly JobAdmissionController _controller;
    private readonly Func<IReadOnlyList<LayerRange>> _uncovered;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, TaskCompletionSource<AdmissionEvent>> _waiting = new(StringComparer.Ordinal);
    private readonly ITimer _tick;

    /// <param name="options">Limits of the queue.</param>
    /// <param name="uncovered">The layers no serving node holds now (empty when the model is covered).</param>
    /// <param name="time">Clock of the queue deadlines and the tick.</param>
    /// <param name="tickInterval">How often coverage and deadlines are checked.</param>
    /// <param name="logger">Where tick errors go.</param>
    public JobAdmissionGate(JobAdmissionOptions options, Func<IReadOnlyList<LayerRange>> uncovered, TimeProvider time, TimeSpan tickInterval, ILogger logger)
    {
        _controller = new JobAdmissionController(options, time);
        _uncovered = uncovered;
        _logger = logger;
        _tick = time.CreateTimer(_ => Tick(), null, tickInterval, tickInterval);
    }

    /// <summary>Jobs waiting.</summary>
    public int Queued => _controller.Queued;

    /// <summary>Jobs holding a slot.</summary>
    public int Running => _controller.Running;

    /// <summary>Returns when job <paramref name="id"/> holds a slot; it must call <see cref="Complete"/> when done.</summary>
    /// <exception cref="JobFailedException">The queue is full (429), or the job waited the queue timeout (503).</exception>
    /// <exception cref="OperationCanceledException">Cancelled while waiting (the job leaves the queue).</exception>
    public async Task AdmitAsync(string id, CancellationToken ct)
    {
        var waiting = new TaskCompletionSource<AdmissionEvent>(TaskCreationOptions.RunContinuationsAsynchronously);
        _waiting[id] = waiting;
        var first = _controller.Submit(id);
        if (first.Outcome != AdmissionOutcome.Queued)
        {
            _waiting.TryRemove(id, out _);
            waiting.TrySetResult(first);
        }
        AdmissionEvent decision;
        using (ct.Register(() =>
        {
            Resolve(_controller.Cancel(id));
            if (_waiting.TryRemove(id, out var w)) w.TrySetCanceled(ct);
        }))
        {
            decision = await waiting.Task.ConfigureAwait(false);
        }
        switch (decision.Outcome)
        {
            case AdmissionOutcome.Started: return;
            case AdmissionOutcome.RejectedQueueFull:
                throw new JobFailedException(decision.Error ?? "the job queue is full", 429, "queue_full");
            default:
                throw new JobFailedException(decision.Error ?? "timed out waiting for the swarm", 503,
                    decision.Uncovered.Count > 0 ? "layers_uncovered" : "queue_timeout");
        }
    }

    /// <summary>Job <paramref name="id"/> finished or failed: its slot goes to the next waiting job.</summary>
    public void Complete(string id) => Resolve(_controller.Complete(id));

    /// <summary>Starts queued jobs the current coverage allows, and times out those past their deadline.</summary>
    public void Tick()
    {
        try
        {
            Resolve(_controller.UpdateCoverage(_uncovered()));
            Resolve(_controller.Tick());
        }
        catch (Exception e) { LogTickError(e.Message); }
    }

    private void Resolve(IReadOnlyList<AdmissionEvent> events)
    {
        foreach (var e in events)
            if (_waiting.TryRemove(e.JobId, out var w)) w.TrySetResult(e);
    }

    /// <summary>Stops the tick.</summary>
    public void Dispose() => _tick.Dispose();

    [LoggerMessage(201, LogLevel.Error, "admission tick failed: {Message}")]
    private partial void LogTickError(string message);
}
