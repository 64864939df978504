using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Swarm.Coordinator.Jobs;
using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Routing;
using Swarm.Coordinator.Telemetry;
using Swarm.Coordinator.Verification;
using Swarm.Telemetry;
using Swarm.Tokenization;

namespace Swarm.Coordinator.Service;

/// <summary>
/// Runs generation jobs through the swarm — the entry point of the HTTP API. A job passes the admission gate
/// (<see cref="JobAdmissionGate"/>: concurrency limit, queue, coverage wait), then its <see cref="JobStepLoop"/> generates
/// it over <see cref="RouteSession"/>s, repairing the route when a node fails; <see cref="JobHistory"/> keeps the table of
/// recent jobs. This class ties them together and records the job's span, metrics and outcome.
/// </summary>
internal sealed class JobRunner : IDisposable
{
    private readonly JobAdmissionGate _admission;
    private readonly JobHistory _history;
    private readonly StepLoopServices _loop;
    private readonly TimeProvider _time;
    private readonly IDisposable _observed;
    private readonly string _idPrefix = CompletionIdPrefix();
    private long _nextJob;

    /// <summary>The coordinator's job runner: its registry, router and node connections, on the coordinator's clock.</summary>
    public JobRunner(SwarmCoordinator swarm, ILogger<JobRunner> logger)
        : this(OptionsOf(swarm), swarm.Registry, swarm.Router, new CoordinatorStepChannel(swarm), swarm.Tokenizer,
            swarm.Time, logger, swarm.CountRecovery, swarm.HopPaths, swarm.Bans)
    {
    }

    /// <summary>A job runner over any step channel and clock (unit tests use fakes).</summary>
    internal JobRunner(JobRunnerOptions options, NodeRegistry registry, IRouter router, IStepChannel channel, ITextTokenizer? tokenizer,
        TimeProvider time, ILogger logger, Action? onRecovery = null, Nat.HopPathPlanner? hopPaths = null, BanBoard? bans = null)
    {
        _time = time;
        _history = new JobHistory(time);
        _admission = new JobAdmissionGate(new JobAdmissionOptions
        {
            MaxConcurrentJobs = options.MaxConcurrentJobs,
            MaxQueueLength = options.MaxQueueLength,
            QueueTimeout = options.QueueTimeout,
        }, () => registry.ServingCoverage(options.NumLayers).Uncovered, time, options.AdmissionTickInterval, logger);
        var sessions = new RouteSessionFactory(registry, router, channel, time, options, hopPaths);
        bans ??= new BanBoard(registry, time, options.Verification.BanTime);
        var checker = new SpotChecker(new SpotCheckPlanner(options.Verification, new Random()), registry, bans, sessions.NextSessionId,
            options.StepTimeout, logger);
        _loop = new StepLoopServices(sessions, time, options, tokenizer, logger, onRecovery, checker, bans);
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
        Verification = swarm.Options.Verification,
        Speculation = swarm.Options.Speculation,
    };

    /// <summary>Jobs waiting for admission.</summary>
    public int Queued => _admission.Queued;

    /// <summary>Jobs generating now.</summary>
    public int Running => _admission.Running;

    /// <summary>Jobs that finished with a result.</summary>
    public long Completed => _history.Count(JobOutcome.Completed);

    /// <summary>Admitted jobs that failed (not counting those whose client went away: <see cref="Cancelled"/>).</summary>
    public long Failed => _history.Count(JobOutcome.Failed);

    /// <summary>Jobs whose client went away, while queued or running.</summary>
    public long Cancelled => _history.Count(JobOutcome.Cancelled);

    /// <summary>Jobs refused at admission: the queue was full, or they waited the queue timeout.</summary>
    public long Rejected => _history.Count(JobOutcome.Rejected);

    /// <summary>Waiting and running jobs (running ones with their progress so far), then the last finished ones (at most 20).</summary>
    public IEnumerable<JobRecord> Recent => _history.Recent;

    /// <summary>
    /// Runs a job to completion, calling <paramref name="onDelta"/> with its new token ids and text as they are
    /// generated (streaming). The job's id is <c>cmpl-</c>, a random prefix drawn when this runner was created (so ids
    /// stay unique across restarts) and the job's number: <c>cmpl-k3x9q2mz-17</c>.
    /// </summary>
    /// <exception cref="JobFailedException">Queue full (429), layers uncovered past the wait (503), or the job failed (500, 503).</exception>
    /// <param name="spec">Prompt, sampling and stop sequences.</param>
    /// <param name="onDelta">Called with each token and the text it releases (see <see cref="JobDelta"/>).</param>
    /// <param name="ct">Cancels the job (the client went away); its route is released.</param>
    public async Task<JobResult> RunAsync(JobSpec spec, Func<JobDelta, ValueTask>? onDelta, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(spec);
        long jobNumber = Interlocked.Increment(ref _nextJob);
        string id = string.Create(CultureInfo.InvariantCulture, $"cmpl-{_idPrefix}-{jobNumber}");
        using var activity = CoordinatorInstrumentation.StartJob(id, spec.Prompt.Count, spec.Sampling.MaxNewTokens);
        long started = _time.GetTimestamp();
        _history.RecordQueued(id, spec.Prompt.Count);
        try { await _admission.AdmitAsync(id, ct).ConfigureAwait(false); }
        catch (Exception e)
        {
            var outcome = e is OperationCanceledException ? JobOutcome.Cancelled : JobOutcome.Rejected;
            _history.RecordNeverRan(id, outcome);
            SwarmTelemetry.RecordFailure(activity, outcome.ToString().ToLowerInvariant(), null, e.Message, (e as JobFailedException)?.Code);
            throw;
        }
        activity?.AddEvent(new ActivityEvent(CoordinatorInstrumentation.AdmittedEvent,
            tags: new ActivityTagsCollection { ["swarm.queue_ms"] = _time.GetElapsedTime(started).TotalMilliseconds }));
        var loop = new JobStepLoop(_loop, jobNumber, id, spec, started);
        try
        {
            _history.RecordRunning(id, loop.Progress);
            var (finish, stages) = await loop.RunAsync(onDelta, activity, ct).ConfigureAwait(false);
            var tokens = loop.Tokens.ToList();
            var progress = loop.Progress.Read();
            double totalMs = _time.GetElapsedTime(started).TotalMilliseconds;
            double ttft = progress.TimeToFirstTokenMs ?? 0;
            var result = new JobResult(id, tokens, loop.Text, finish, spec.Prompt.Count, ttft, totalMs, progress.Recoveries, stages)
            {
                Echo = loop.Echo, Logprobs = loop.Shown?.ToList(), HiddenStates = loop.HiddenStates, RecomputedTokens = progress.RecomputedTokens,
                Speculation = loop.Speculation,
            };
            double? rate = tokens.Count > 1 ? (tokens.Count - 1) / ((totalMs - ttft) / 1000) : null;
            _history.RecordDone(id, spec.Prompt.Count, tokens.Count, ttft, rate, progress.Recoveries);
            activity?.SetTag("swarm.finish_reason", finish);
            activity?.SetTag("swarm.completion_tokens", tokens.Count);
            activity?.SetTag("swarm.recoveries", progress.Recoveries);
            return result;
        }
        catch (Exception e)
        {
            var outcome = e is OperationCanceledException ? JobOutcome.Cancelled : JobOutcome.Failed;
            var progress = loop.Progress.Read();
            _history.RecordEnded(id, outcome, spec.Prompt.Count, progress, e.Message);
            activity?.SetTag("swarm.completion_tokens", progress.Tokens);
            activity?.SetTag("swarm.recoveries", progress.Recoveries);
            SwarmTelemetry.RecordFailure(activity, "job.failed", null, outcome == JobOutcome.Cancelled ? JobHistory.ClientWentAway : e.Message,
                (e as JobFailedException)?.Code);
            throw;
        }
        finally
        {
            _admission.Complete(id);
        }
    }

    /// <summary>Eight random characters of [a-z0-9], drawn once per runner (per coordinator start).</summary>
    private static string CompletionIdPrefix()
    {
        const string alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
        return string.Create(8, 0, (chars, _) =>
        {
            for (int i = 0; i < chars.Length; i++) chars[i] = alphabet[RandomNumberGenerator.GetInt32(alphabet.Length)];
        });
    }

    /// <summary>Stops the admission tick and the metrics observation.</summary>
    public void Dispose()
    {
        _admission.Dispose();
        _observed.Dispose();
    }
}
