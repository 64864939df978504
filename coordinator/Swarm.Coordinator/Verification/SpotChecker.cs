using Microsoft.Extensions.Logging;
using Swarm.Coordinator.Jobs;
using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Telemetry;
using Swarm.Protocol;

namespace Swarm.Coordinator.Verification;

/// <summary>How a spot-checked step ended.</summary>
internal enum CheckOutcome
{
    /// <summary>The replicas agreed (or the arbiter sided with the checked node and banned the shadow): the step stands.</summary>
    Passed,
    /// <summary>The shadow failed the step or answered something unusable: the step stands unjudged; the session is no longer checked.</summary>
    Abandoned,
    /// <summary>The shadow did not answer within its patience: the step stands unjudged (not held against the checked node); the session is no longer checked.</summary>
    TimedOut,
    /// <summary>The replicas disagreed and no majority emerged: the step is not trusted and is generated again on a new route.</summary>
    Undecided,
    /// <summary>A node of the route was caught and banned: the step is generated again on a new route.</summary>
    Caught,
}

/// <summary>A spot check's verdict on one step; <see cref="Culprit"/> is the banned node of the route (with <see cref="CheckOutcome.Caught"/>).</summary>
internal sealed record CheckResult(CheckOutcome Outcome, int? Culprit = null, string Reason = "");

/// <summary>A checked step the route has answered (and the job has accepted), waiting for its shadow's answer to be judged.</summary>
/// <param name="TokenIndex">Index in the job's tokens of the step's first token (the job's tokens before the step).</param>
/// <param name="Session">The checked session (it may have been released since; its shadow session stays open until the check settles).</param>
/// <param name="Plan">The session's spot check when the step was sent.</param>
/// <param name="Request">The step as the coordinator sent it.</param>
/// <param name="Reply">The route's answer.</param>
/// <param name="AnsweredAt">When the route's answer arrived: a pass vouches for the nodes' results up to then.</param>
/// <param name="DueAt">Timestamp (of the job's clock) after which the shadow's answer is no longer awaited.</param>
/// <param name="Tokens">Every token id before the step's output (prompt, tokens so far and the step's draft): what an arbiter replays.</param>
internal sealed record PendingCheck(int TokenIndex, RouteSession Session, SpotCheckPlan Plan, ForwardRequest Request, TokenResult Reply,
    DateTimeOffset AnsweredAt, long DueAt, long[] Tokens);

/// <summary>
/// Judges a spot-checked step once its shadow has answered (the job accepted the route's answer without waiting). The
/// checked hop's fingerprint (carried back in the route's <see cref="TokenResult"/>) is compared with the shadow's; when
/// their inputs differ the hop that sent both is blamed; when their outputs differ a third replica (the arbiter) replays
/// the job's tokens through the route's earlier hops and its own copy of the layers, and the replica that disagrees with
/// the other two is banned. Every check counts as passed or failed for the nodes it judged (their reputation) and in
/// <c>swarm_verification_checks_total</c> (outcomes passed, failed, timeout, inconclusive).
/// </summary>
internal sealed partial class SpotChecker(SpotCheckPlanner planner, NodeRegistry registry, BanBoard bans, Func<long> nextSession,
    TimeSpan stepTimeout, ILogger logger)
{
    /// <summary>Whether sessions are checked at all.</summary>
    public bool Enabled => planner.Options.Rate > 0;

    /// <summary>True while the node is on probation (see <see cref="SpotCheckPlanner.IsOnProbation"/>).</summary>
    public bool IsOnProbation(NodeSnapshot node) => planner.IsOnProbation(node);

    /// <summary>The registry whose nodes are checked.</summary>
    public NodeRegistry Registry => registry;

    /// <summary>
    /// How long a shadow's answer is awaited after the route answered a step that took <paramref name="took"/>: four
    /// times as long, at least <see cref="VerificationOptions.ShadowPatience"/>.
    /// </summary>
    public TimeSpan ShadowPatience(TimeSpan took) => TimeSpan.FromTicks(Math.Max(planner.Options.ShadowPatience.Ticks, 4 * took.Ticks));

    /// <summary>Picks the hop to check on a new session and its shadow, or null.</summary>
    /// <param name="route">The new session's route.</param>
    /// <param name="alwaysOnProbation">Check for certain when the chosen hop is on probation (see <see cref="SpotCheckPlanner.Choose"/>).</param>
    public SpotCheckPlan? Plan(Routing.Route route, bool alwaysOnProbation = false)
    {
        if (planner.Choose(route, registry.Snapshot(), alwaysOnProbation) is not { } choice) return null;
        var hop = route.Hops[choice.HopIndex];
        var shadow = new Hop
        {
            NodeId = choice.Shadow.Id, Endpoint = choice.Shadow.Info.Endpoint, Key = choice.Shadow.Info.Key,
            Layers = hop.Layers,
        };
        return new SpotCheckPlan(choice.HopIndex, hop.NodeId, shadow, nextSession());
    }

    /// <summary>A check whose shadow never answered: counted (<c>outcome="timeout"</c>) and logged; nobody is blamed.</summary>
    public CheckResult TimedOut(PendingCheck check)
    {
        CoordinatorInstrumentation.Checked("timeout");
        LogShadowTimeout(check.Request.JobId, check.Request.Step, check.Plan.CheckedNode, check.Plan.Shadow.NodeId);
        return new CheckResult(CheckOutcome.TimedOut, Reason: $"shadow {check.Plan.Shadow.NodeId} did not answer");
    }

    /// <summary>Compares the route's answer to a checked step with the shadow's, arbitrating a disagreement.</summary>
    /// <param name="check">The checked step.</param>
    /// <param name="shadowReply">The shadow's answer to the step.</param>
    /// <param name="ct">Cancels an arbitration.</param>
    public async Task<CheckResult> JudgeAsync(PendingCheck check, IMessage shadowReply, CancellationToken ct)
    {
        var (session, plan, request, reply) = (check.Session, check.Plan, check.Request, check.Reply);
        bool last = plan.HopIndex == session.WireRoute.Length - 1;
        if (shadowReply is not TokenResult { Fingerprints.Length: 1 } shadow || reply.Fingerprints.Length != session.WireRoute.Length
            || reply.Fingerprints[plan.HopIndex].NodeId != plan.CheckedNode)
            return Count(new CheckResult(CheckOutcome.Abandoned, Reason: "the shadow failed the step or the fingerprints were incomplete"));
        var mine = new ReplicaAnswer(plan.CheckedNode, reply.Fingerprints[plan.HopIndex], last ? reply.TokenId : -1);
        var theirs = new ReplicaAnswer(plan.Shadow.NodeId, shadow.Fingerprints[0], shadow.TokenId);
        var options = planner.Options;
        if (plan.HopIndex > 0 && !FingerprintComparer.SameInput(mine, theirs, options))
        {
            int sender = session.WireRoute[plan.HopIndex - 1].NodeId;
            return Convict(sender, $"node {sender} sent different inputs to node {plan.CheckedNode} and its shadow {plan.Shadow.NodeId}", onRoute: true, check.AnsweredAt);
        }
        if (FingerprintComparer.Agree(mine, theirs, options))
        {
            registry.RecordCheck(mine.NodeId, passed: true, check.AnsweredAt);
            registry.RecordCheck(theirs.NodeId, passed: true, check.AnsweredAt);
            return Count(new CheckResult(CheckOutcome.Passed));
        }
        int positions = (int)(request.Input.Shape.Length > 1 ? request.Input.Shape[1] : 1);
        var arbiter = await ArbitrateAsync(session, request, plan, check.Tokens, last, ct).ConfigureAwait(false);
        if (arbiter is not null)
        {
            var judged = FingerprintComparer.LastPositions(arbiter, positions);
            bool withMine = FingerprintComparer.Agree(judged, mine, options), withTheirs = FingerprintComparer.Agree(judged, theirs, options);
            string why = $"its {(last ? "token or logits" : "activations")} at step {request.Step} disagreed with nodes";
            if (withTheirs && !withMine)
            {
                registry.RecordCheck(theirs.NodeId, passed: true, check.AnsweredAt);
                return Convict(mine.NodeId, $"node {mine.NodeId}: {why} {theirs.NodeId} and {arbiter.NodeId}", onRoute: true, check.AnsweredAt);
            }
            if (withMine && !withTheirs)
            {
                registry.RecordCheck(mine.NodeId, passed: true, check.AnsweredAt);
                session.EndCheck();
                return Convict(theirs.NodeId, $"node {theirs.NodeId}: {why} {mine.NodeId} and {arbiter.NodeId}", onRoute: false, check.AnsweredAt);
            }
        }
        session.EndCheck();
        LogUndecided(request.JobId, request.Step, mine.NodeId, theirs.NodeId, arbiter?.NodeId.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none");
        return Count(new CheckResult(CheckOutcome.Undecided, Reason: $"nodes {mine.NodeId} and {theirs.NodeId} disagreed at step {request.Step} and no third replica decided"));
    }

    /// <summary>
    /// Bans <paramref name="node"/> for an answer no honest node gives (e.g. an acceptance that contradicts its own draft),
    /// counted, logged and rewound like a node caught by a check.
    /// </summary>
    public void ConvictSelfContradiction(int node, string reason, DateTimeOffset stepAt) => Convict(node, reason, onRoute: true, stepAt);

    /// <summary>Bans <paramref name="node"/>; counted once as a failed check (the step's other replica passed).</summary>
    private CheckResult Convict(int node, string reason, bool onRoute, DateTimeOffset stepAt)
    {
        registry.RecordCheck(node, passed: false);
        CoordinatorInstrumentation.Checked("failed");
        LogBanned(node, reason);
        bans.Ban(node, reason, stepAt);
        return new CheckResult(onRoute ? CheckOutcome.Caught : CheckOutcome.Passed, onRoute ? node : null, reason);
    }

    private static CheckResult Count(CheckResult r)
    {
        CoordinatorInstrumentation.Checked(r.Outcome switch
        {
            CheckOutcome.Passed => "passed",
            _ => "inconclusive",
        });
        return r;
    }

    /// <summary>
    /// Runs the step on a third replica: the job's tokens so far replayed from position 0 through the route's hops before
    /// the checked one and then the arbiter (same layers as the checked hop); its fingerprint of the step's positions, or null.
    /// </summary>
    private async Task<ReplicaAnswer?> ArbitrateAsync(RouteSession session, ForwardRequest request, SpotCheckPlan plan, long[] tokens,
        bool last, CancellationToken ct)
    {
        var layers = plan.Shadow.Layers;
        var exclude = session.Route.NodeIds.Append(plan.Shadow.NodeId).ToHashSet();
        var candidates = registry.Snapshot().Where(n => n.IsRoutable && n.Health == NodeHealth.Alive && !exclude.Contains(n.Id)
            && n.Range is { } r && r.Start <= layers.Start && r.End >= layers.End).ToArray();
        if (candidates.Length == 0) return null;
        var judge = candidates[Random.Shared.Next(candidates.Length)];
        long id = nextSession();
        Hop[] route = [.. session.WireRoute[..plan.HopIndex], new Hop { NodeId = judge.Id, Endpoint = judge.Info.Endpoint, Key = judge.Info.Key, Layers = layers }];
        var replay = request with
        {
            SessionId = id, Kind = StepKind.Replay, StartPosition = 0, Input = WireTensor.FromTokenIds(tokens),
            Route = route, Shadow = null, Timings = [], Fingerprints = [],
            // A draft model on the arbiter's last stage needs every token before the draft (it rebuilds its cache from them).
            DraftContext = request.DraftCount > 0 ? [.. tokens[..^request.Draft.Length].Select(t => (int)t)] : [],
        };
        try
        {
            session.SendSide(route[0].NodeId, replay);
            var answer = await session.AwaitSideReplyAsync(id, request.Step, stepTimeout, ct).ConfigureAwait(false);
            if (answer is not TokenResult tr || tr.Fingerprints.Length != route.Length) return null;
            return new ReplicaAnswer(judge.Id, tr.Fingerprints[^1], last ? tr.TokenId : -1);
        }
        finally
        {
            foreach (var hop in route)
                try { session.Channel.Send(hop.NodeId, new CloseSession { SessionId = id }, id); }
                catch (Transport.PeerDisconnectedException) { }
        }
    }

    [LoggerMessage(300, LogLevel.Warning, "banned node {Node}: {Reason}")]
    private partial void LogBanned(int node, string reason);
    [LoggerMessage(302, LogLevel.Warning, "job {Job} step {Step}: shadow {Shadow} of node {Checked} did not answer in time; the step stands unchecked")]
    private partial void LogShadowTimeout(long job, int step, int @checked, int shadow);
    [LoggerMessage(301, LogLevel.Warning, "job {Job} step {Step}: nodes {Checked} and {Shadow} disagreed, arbiter {Arbiter} did not decide; generating from that step again")]
    private partial void LogUndecided(long job, int step, int @checked, int shadow, string arbiter);
}
