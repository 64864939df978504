using Microsoft.Extensions.Logging;
using Swarm.Coordinator.Jobs;
using Swarm.Coordinator.Membership;
using Swarm.Coordinator.Telemetry;
using Swarm.Protocol;

namespace Swarm.Coordinator.Verification;

/// <summary>How a spot-checked step ended.</summary>
internal enum CheckOutcome
{
    /// <summary>The replicas agreed (or the arbiter sided with the checked node and banned the shadow): accept the step.</summary>
    Passed,
    /// <summary>The shadow did not answer: accept the step; the session is no longer checked.</summary>
    Abandoned,
    /// <summary>The replicas disagreed and no majority emerged: do not trust the step, replay it on a new route.</summary>
    Undecided,
    /// <summary>A node of the route was caught and banned: replay the step on a new route.</summary>
    Caught,
}

/// <summary>A spot check's verdict on one step; <see cref="Culprit"/> is the banned node of the route (with <see cref="CheckOutcome.Caught"/>).</summary>
internal sealed record CheckResult(CheckOutcome Outcome, int? Culprit = null, string Reason = "");

/// <summary>
/// Judges a spot-checked step. The checked hop's fingerprint (carried back in the route's <see cref="TokenResult"/>) is
/// compared with the shadow's; when their inputs differ the hop that sent both is blamed; when their outputs differ a
/// third replica (the arbiter) replays the job's tokens through the route's earlier hops and its own copy of the layers,
/// and the replica that disagrees with the other two is banned. Every check counts as passed or failed for the nodes
/// it judged (their reputation) and in <c>swarm_verification_checks_total</c>.
/// </summary>
internal sealed partial class SpotChecker(SpotCheckPlanner planner, NodeRegistry registry, BanBoard bans, Func<long> nextSession,
    TimeSpan stepTimeout, ILogger logger)
{
    /// <summary>Whether sessions are checked at all.</summary>
    public bool Enabled => planner.Options.Rate > 0;

    /// <summary>True while the node is on probation (see <see cref="SpotCheckPlanner.IsOnProbation"/>).</summary>
    public bool IsOnProbation(NodeSnapshot node) => planner.IsOnProbation(node);

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

    /// <summary>Compares the route's answer to <paramref name="request"/> with the shadow's, arbitrating a disagreement.</summary>
    /// <param name="session">The checked session (its <see cref="RouteSession.Check"/> is set).</param>
    /// <param name="request">The step as the coordinator sent it.</param>
    /// <param name="reply">The route's answer.</param>
    /// <param name="took">How long the route took (the shadow is given as long again, at least the shadow patience).</param>
    /// <param name="tokens">
    /// Every token id before this step's output (prompt and tokens so far): what the arbiter replays — built only when
    /// the replicas disagree.
    /// </param>
    public async Task<CheckResult> VerifyAsync(RouteSession session, ForwardRequest request, TokenResult reply, TimeSpan took,
        Func<long[]> tokens, CancellationToken ct)
    {
        var plan = session.Check!;
        var patience = TimeSpan.FromTicks(Math.Max(planner.Options.ShadowPatience.Ticks, 4 * took.Ticks));
        var side = await session.AwaitSideReplyAsync(plan.ShadowSession, request.Step, patience, ct).ConfigureAwait(false);
        bool last = plan.HopIndex == session.WireRoute.Length - 1;
        if (side is not TokenResult { Fingerprints.Length: 1 } shadowReply || reply.Fingerprints.Length != session.WireRoute.Length
            || reply.Fingerprints[plan.HopIndex].NodeId != plan.CheckedNode)
        {
            session.EndCheck();
            return Count(new CheckResult(CheckOutcome.Abandoned, Reason: "the shadow did not answer"));
        }
        var mine = new ReplicaAnswer(plan.CheckedNode, reply.Fingerprints[plan.HopIndex], last ? reply.TokenId : -1);
        var theirs = new ReplicaAnswer(plan.Shadow.NodeId, shadowReply.Fingerprints[0], shadowReply.TokenId);
        var options = planner.Options;
        if (plan.HopIndex > 0 && !FingerprintComparer.SameInput(mine, theirs, options))
        {
            int sender = session.WireRoute[plan.HopIndex - 1].NodeId;
            return Convict(sender, $"node {sender} sent different inputs to node {plan.CheckedNode} and its shadow {plan.Shadow.NodeId}", onRoute: true);
        }
        if (FingerprintComparer.Agree(mine, theirs, options))
        {
            registry.RecordCheck(mine.NodeId, passed: true);
            registry.RecordCheck(theirs.NodeId, passed: true);
            return Count(new CheckResult(CheckOutcome.Passed));
        }
        int positions = (int)(request.Input.Shape.Length > 1 ? request.Input.Shape[1] : 1);
        var arbiter = await ArbitrateAsync(session, request, plan, tokens(), last, ct).ConfigureAwait(false);
        if (arbiter is not null)
        {
            var judged = FingerprintComparer.LastPositions(arbiter, positions);
            bool withMine = FingerprintComparer.Agree(judged, mine, options), withTheirs = FingerprintComparer.Agree(judged, theirs, options);
            string why = $"its {(last ? "token or logits" : "activations")} at step {request.Step} disagreed with nodes";
            if (withTheirs && !withMine)
            {
                registry.RecordCheck(theirs.NodeId, passed: true);
                return Convict(mine.NodeId, $"node {mine.NodeId}: {why} {theirs.NodeId} and {arbiter.NodeId}", onRoute: true);
            }
            if (withMine && !withTheirs)
            {
                registry.RecordCheck(mine.NodeId, passed: true);
                session.EndCheck();
                return Convict(theirs.NodeId, $"node {theirs.NodeId}: {why} {mine.NodeId} and {arbiter.NodeId}", onRoute: false);
            }
        }
        session.EndCheck();
        LogUndecided(request.JobId, request.Step, mine.NodeId, theirs.NodeId, arbiter?.NodeId.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none");
        return Count(new CheckResult(CheckOutcome.Undecided, Reason: $"nodes {mine.NodeId} and {theirs.NodeId} disagreed and no third replica decided"));
    }

    /// <summary>Bans <paramref name="node"/>; counted once as a failed check (the step's other replica passed).</summary>
    private CheckResult Convict(int node, string reason, bool onRoute)
    {
        registry.RecordCheck(node, passed: false);
        CoordinatorInstrumentation.Checked("failed");
        LogBanned(node, reason);
        bans.Ban(node, reason);
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
    [LoggerMessage(301, LogLevel.Warning, "job {Job} step {Step}: nodes {Checked} and {Shadow} disagreed, arbiter {Arbiter} did not decide; replaying the step")]
    private partial void LogUndecided(long job, int step, int @checked, int shadow, string arbiter);
}
