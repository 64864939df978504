using Swarm.Coordinator.Verification;
using Swarm.Protocol;

namespace Swarm.Coordinator.Jobs;

/// <summary>
/// A job's spot checks that wait for their shadows. The step loop accepts a checked step's answer at once and goes on;
/// the check is registered here (<see cref="Add"/>) and judged when the shadow's answer has arrived — between later
/// steps (<see cref="SettleAsync"/> without waiting), or at the end of the job, which waits for every one of them up to
/// its patience (<see cref="SpotChecker.ShadowPatience"/>) before the job may complete. A shadow that does not answer in
/// time counts as <c>outcome="timeout"</c> and blames nobody; its session's later checks time out with it. A check whose
/// shadow was banned meanwhile is dropped unjudged (a banned replica cannot vouch for anything), and so is one whose
/// checked node was banned if the step came after the node's last passed check (the ban already rewinds it; judging it
/// would only arbitrate again). Each check keeps its
/// session's shadow open until it settles (<see cref="RouteSession.CheckStarted"/>); <see cref="DropFrom"/> and
/// <see cref="DropAll"/> settle checks nobody needs any more (rewound steps, a job that ended, failed or was cancelled),
/// so no shadow session outlives its job. Used on the job's loop only.
/// </summary>
internal sealed class JobSpotChecks(SpotChecker checker, JobReplyInbox inbox, TimeProvider time)
{
    private readonly List<PendingCheck> _pending = [];
    private readonly HashSet<long> _silentShadows = [];   // shadow sessions that timed out or failed: no more answers expected

    /// <summary>Checks waiting for their shadow.</summary>
    public int Count => _pending.Count;

    /// <summary>Registers a checked step the route answered (and the job accepted) until its shadow answers.</summary>
    /// <param name="session">The checked session.</param>
    /// <param name="plan">Its spot check when the step was sent.</param>
    /// <param name="tokenIndex">The job's token count before the step.</param>
    /// <param name="request">The step as sent.</param>
    /// <param name="reply">The route's answer.</param>
    /// <param name="answeredAt">When the answer arrived.</param>
    /// <param name="took">How long the route took (the shadow's patience is derived from it).</param>
    /// <param name="tokens">Every token id before the step's output, for an arbiter's replay.</param>
    public void Add(RouteSession session, SpotCheckPlan plan, int tokenIndex, ForwardRequest request, TokenResult reply,
        DateTimeOffset answeredAt, TimeSpan took, long[] tokens)
    {
        long due = time.GetTimestamp() + (long)(checker.ShadowPatience(took).TotalSeconds * time.TimestampFrequency);
        session.CheckStarted();
        _pending.Add(new PendingCheck(tokenIndex, session, plan, request, reply, answeredAt, due, tokens));
    }

    /// <summary>
    /// Judges, in the order they were sent, the checks whose shadow has answered or is past its patience; with
    /// <paramref name="wait"/>, every check, waiting for each shadow up to its patience. Returns each judged check
    /// with its verdict (a ban has been issued for <see cref="CheckOutcome.Caught"/>).
    /// </summary>
    public async Task<IReadOnlyList<(PendingCheck Check, CheckResult Result)>> SettleAsync(bool wait, CancellationToken ct)
    {
        var judged = new List<(PendingCheck, CheckResult)>();
        if (_pending.Count == 0) return judged;
        inbox.KeepArrived();
        for (int i = 0; i < _pending.Count;)
        {
            var c = _pending[i];
            var answer = inbox.TakeKept(m => Answers(m, c));
            if (answer is null && wait && !_silentShadows.Contains(c.Plan.ShadowSession) && Remaining(c) is { } left)
                answer = await c.Session.AwaitSideReplyAsync(c.Plan.ShadowSession, c.Request.Step, left, ct).ConfigureAwait(false);
            bool silent = answer is null && (_silentShadows.Contains(c.Plan.ShadowSession) || Remaining(c) is null);
            if (answer is null && !silent) { i++; continue; }
            _pending.RemoveAt(i);
            if (Moot(c))
            {
                c.Session.CheckSettled();
                continue;
            }
            var result = answer is null ? checker.TimedOut(c) : await checker.JudgeAsync(c, answer, ct).ConfigureAwait(false);
            if (result.Outcome is CheckOutcome.TimedOut or CheckOutcome.Abandoned)
            {
                _silentShadows.Add(c.Plan.ShadowSession);
                c.Session.EndCheck();
            }
            c.Session.CheckSettled();
            judged.Add((c, result));
        }
        return judged;
    }

    /// <summary>Drops, unjudged, the checks of the job's tokens from <paramref name="tokenIndex"/> on (they are generated again).</summary>
    public void DropFrom(int tokenIndex)
    {
        for (int i = _pending.Count - 1; i >= 0; i--)
            if (_pending[i].TokenIndex >= tokenIndex)
            {
                var c = _pending[i];
                _pending.RemoveAt(i);
                c.Session.CheckSettled();
            }
    }

    /// <summary>Drops every check unjudged (the job ended, failed or was cancelled); their shadow sessions are closed.</summary>
    public void DropAll() => DropFrom(int.MinValue);

    /// <summary>True when judging the check can change nothing: its shadow is banned, or its checked node is and the ban reaches back to the step.</summary>
    private bool Moot(PendingCheck c) =>
        checker.Registry.Get(c.Plan.Shadow.NodeId) is { Banned: true }
        || checker.Registry.Get(c.Plan.CheckedNode) is { Banned: true } n && c.AnsweredAt > (n.LastPassedCheck ?? n.JoinedAt);

    /// <summary>Time left until the check's patience runs out, or null when it has.</summary>
    private TimeSpan? Remaining(PendingCheck c)
    {
        long left = c.DueAt - time.GetTimestamp();
        return left > 0 ? TimeSpan.FromSeconds((double)left / time.TimestampFrequency) : null;
    }

    private static bool Answers(IMessage m, PendingCheck c) => m switch
    {
        TokenResult tr => tr.SessionId == c.Plan.ShadowSession && tr.Step == c.Request.Step,
        StepFailed sf => sf.SessionId == c.Plan.ShadowSession && sf.Step == c.Request.Step,
        _ => false,
    };
}
