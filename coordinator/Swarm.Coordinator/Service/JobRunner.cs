using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Swarm.Coordinator.Jobs;
using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Routing;
using Swarm.Coordinator.Telemetry;
using Swarm.Telemetry;
using Swarm.Tokenization;

namespace Swarm.Coordinator.Service;

/// <summary>
/// Runs generation jobs through the swarm — the entry point of the HTTP API. A job passes the admission gate
/// (<see cref="JobAdmissionGate"/>: concurrency limit, queue, coverage wait), then its <see cref="JobStepLoop"/> generates
/// it over <see cref="RouteSession"/>s, repairing the route when a node fails; <see cref="JobHistory"/> keeps the table of
/// recent jobs. This class ties them together and records the job's span, metrics and outcome.
/// </summary>
public sealed class JobRunner : IDisposable
{
    private readonly JobAdmissionGate _admission;
    private readonly JobHistory _history;
    private readonly StepLoopServices _loop;
    private readonly TimeProvider _time;
    private readonly IDisposable _observed;
    private long _nextJob;

    /// <summary>The coordinator's job runner: its registry, router and node connections, on the system clock.</summary>
    public JobRunner(SwarmCoordinator swarm, ILogger<JobRunner> logger)
        : this(OptionsOf(swarm), swarm.Registry, swarm.Router, new CoordinatorStepChannel(swarm), swarm.Tokenizer,
            TimeProvider.System, logger, swarm.CountRecovery)
    {
    }

    /// <summary>A job runner over any step channel and clock (unit tests use fakes).</summary>
    internal JobRunner(JobRunnerOptions options, NodeRegistry registry, IRouter router, IStepChannel channel, ITextTokenizer? tokenizer,
        TimeProvider time, ILogger logger, Action? onRecovery = null)
    {
        _time = time;
        _history = new JobHistory(time);
        _admission = new JobAdmissionGate(new JobAdmissionOptions
        {
            MaxConcurrentJobs = options.MaxConcurrentJobs,
            MaxQueueLength = options.MaxQueueLength,
            QueueTimeout = options.QueueTimeout,
        }, () => registry.ServingCoverage(options.NumLayers).Uncovered, time, options.AdmissionTickInterval, logger);
        var sessions = new RouteSessionFactory(registry, router, channel, time, options);
        _loop = new StepLoopServices(sessions, time, options, tokenizer, logger, onRecovery);
        _observed = CoordinatorInstrumentation.Observe(this);
    }

    private static JobRunnerOptions OptionsOf(SwarmCoordinator swarm) => new()
    {
        NumLayers = swarm.Config.NumLayers,
        ContextLength = swarm.Config.MaxPositionEmbeddings,
        Wire = swarm.Wire,
        MaxConcurrentJobs = swarm.Options.MaxConcurrentJobs,
        MaxQueueLength = swarm.Options.MaxQueueLength,
        QueueTimeout = swarm.Options.QueueTimeout,
        StepTimeout = swarm.Options.StepTimeout,
        MaxRecoveriesPerJob = swarm.Options.MaxRecoveriesPerJob,
    };

    /// <summary>Jobs waiting for admission.</summary>
    public int Queued => _admission.Queued;

    /// <summary>Jobs generating now.</summary>
    public int Running => _admission.Running;

    /// <summary>Jobs that finished with a result.</summary>
    public long Completed => _history.Completed;

    /// <summary>Admitted jobs that failed or were cancelled.</summary>
    public long Failed => _history.Failed;

    /// <summary>Waiting and running jobs, then the last finished ones (at most 20).</summary>
    public IEnumerable<JobRecord> Recent => _history.Recent;

    /// <summary>Raised for every finished job (metrics).</summary>
    public event Action<JobResult>? JobFinished;

    /// <summary>Raised with "failed" or "cancelled" for every admitted job that did not finish.</summary>
    public event Action<string>? JobFailed;

    /// <summary>Runs a job to completion, calling <paramref name="onToken"/> for each new token (streaming).</summary>
    /// <exception cref="JobFailedException">Queue full (429), layers uncovered past the wait (503), or the job failed (500, 503).</exception>
    /// <param name="spec">Prompt, sampling and stop sequences.</param>
    /// <param name="onToken">Called with each token and the text it completes.</param>
    /// <param name="ct">Cancels the job (the client went away); its route is released.</param>
    /// <param name="id">Name of the job in responses and status (default cmpl-N).</param>
    public async Task<JobResult> RunAsync(JobSpec spec, Func<int, string, ValueTask>? onToken, CancellationToken ct, string? id = null)
    {
        long jobNumber = Interlocked.Increment(ref _nextJob);
        id ??= $"cmpl-{jobNumber}";
        using var activity = CoordinatorInstrumentation.StartJob(id, spec.Prompt.Count, spec.Sampling.MaxNewTokens);
        long started = _time.GetTimestamp();
        _history.RecordQueued(id, spec.Prompt.Count);
        try { await _admission.AdmitAsync(id, ct).ConfigureAwait(false); }
        catch (Exception e)
        {
            _history.Forget(id);
            string outcome = e is OperationCanceledException ? "cancelled" : "rejected";
            CoordinatorInstrumentation.JobEnded(outcome);
            SwarmTelemetry.RecordFailure(activity, outcome, null, e.Message, (e as JobFailedException)?.Code);
            throw;
        }
        activity?.AddEvent(new ActivityEvent(CoordinatorInstrumentation.AdmittedEvent,
            tags: new ActivityTagsCollection { ["swarm.queue_ms"] = _time.GetElapsedTime(started).TotalMilliseconds }));
        var loop = new JobStepLoop(_loop, jobNumber, spec, started);
        try
        {
            _history.RecordRunning(id);
            var (finish, stages) = await loop.RunAsync(onToken, activity, ct).ConfigureAwait(false);
            var tokens = loop.Tokens.ToList();
            string text = _loop.Tokenizer?.Decode(tokens) ?? "";
            if (finish == "stop") text = loop.TrimAtStopSequence(text);
            double totalMs = _time.GetElapsedTime(started).TotalMilliseconds;
            double ttft = loop.TimeToFirstTokenMs ?? 0;
            var result = new JobResult(id, tokens, text, finish, spec.Prompt.Count, ttft, totalMs, loop.Recoveries, stages);
            double? rate = tokens.Count > 1 ? (tokens.Count - 1) / ((totalMs - ttft) / 1000) : null;
            _history.RecordDone(id, spec.Prompt.Count, tokens.Count, ttft, rate, loop.Recoveries);
            CoordinatorInstrumentation.JobEnded("completed");
            activity?.SetTag("swarm.finish_reason", finish);
            activity?.SetTag("swarm.completion_tokens", tokens.Count);
            activity?.SetTag("swarm.recoveries", loop.Recoveries);
            JobFinished?.Invoke(result);
            return result;
        }
        catch (Exception e)
        {
            bool cancelled = e is OperationCanceledException;
            string message = cancelled ? "cancelled (client went away)" : e.Message;
            _history.RecordFailed(id, spec.Prompt.Count, loop.Tokens.Count, loop.TimeToFirstTokenMs, loop.Recoveries, message);
            JobFailed?.Invoke(cancelled ? "cancelled" : "failed");
            CoordinatorInstrumentation.JobEnded(cancelled ? "cancelled" : "failed");
            activity?.SetTag("swarm.completion_tokens", loop.Tokens.Count);
            activity?.SetTag("swarm.recoveries", loop.Recoveries);
            SwarmTelemetry.RecordFailure(activity, "job.failed", null, message, (e as JobFailedException)?.Code);
            throw;
        }
        finally
        {
            _admission.Complete(id);
        }
    }

    /// <summary>Stops the admission tick and the metrics observation.</summary>
    public void Dispose()
    {
        _admission.Dispose();
        _observed.Dispose();
    }
}
