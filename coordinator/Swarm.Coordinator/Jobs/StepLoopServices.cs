using Microsoft.Extensions.Logging;
using Swarm.Coordinator.Verification;
using Swarm.Tokenization;

namespace Swarm.Coordinator.Jobs;

/// <summary>What every job's step loop shares.</summary>
/// <param name="Sessions">Opens route sessions (routing, session ids, in-flight accounting).</param>
/// <param name="Time">Clock of step timeouts, patience, back-off and latency figures.</param>
/// <param name="Options">Limits and timing.</param>
/// <param name="Tokenizer">Decodes tokens to the completion's text (streaming, stop sequences); null when the model has none.</param>
/// <param name="Logger">Where recoveries and slow steps are logged.</param>
/// <param name="OnRecovery">Called once per route repair (the coordinator's recovery count).</param>
/// <param name="Checker">Spot checks of sessions' steps; null: none.</param>
/// <param name="Bans">Bans the loops listen to (to recompute what a banned node touched); null: none.</param>
internal sealed record StepLoopServices(RouteSessionFactory Sessions, TimeProvider Time, JobRunnerOptions Options,
    ITextTokenizer? Tokenizer, ILogger Logger, Action? OnRecovery, SpotChecker? Checker = null, BanBoard? Bans = null);

/// <summary>How a job's generation ended: <c>length</c> or <c>stop</c>, and the stages of its last route.</summary>
internal sealed record StepLoopResult(string FinishReason, IReadOnlyList<StageMean> Stages);
