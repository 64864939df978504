using Swarm.Node;
using Swarm.Protocol;

namespace Swarm.Tests.Batching;

/// <summary>A generation job for <see cref="BatchDriver"/>: prompt, tokens wanted, and the iteration it arrives at.</summary>
internal sealed record DriverJob(long[] Prompt, int MaxNew, int ArrivesAt);

/// <summary>
/// Plays the coordinator and the network for a chain of in-process <see cref="StageHost"/>s (one per stage, in
/// route order): submits prefill and decode steps, carries hidden states from host to host, closes sessions when a
/// job is done, and replays a job on a new session when a host preempts it — what JobRunner does over the wire.
/// Every host runs one iteration per round, so several jobs' steps are in flight in different stages at once.
/// With a <c>drafter</c> (job index, its tokens so far, most tokens to draft → drafted tokens) steps carry drafts as the
/// coordinator's speculative steps do: the accepted tokens are recorded and the next step starts at the first rejected position.
/// With <c>modelDraft</c> k &gt; 0 the last host's draft model drafts instead, as with <c>--draft-model</c>: every step asks
/// for k tokens (<see cref="ForwardRequest.DraftCount"/>, with its token ids in <see cref="ForwardRequest.DraftContext"/>)
/// and the next step verifies the ones its answer brought (<c>StepOutput.Drafted</c>).
/// </summary>
internal sealed class BatchDriver(IReadOnlyList<StageHost> hosts, Func<int, IReadOnlyList<int>, int, int[]>? drafter = null, int modelDraft = 0)
{
    private sealed class State(DriverJob job, int index)
    {
        public DriverJob Job { get; } = job;
        public int Index { get; } = index;
        public List<int> Tokens { get; } = [];
        public long Session { get; set; }
        public int Cached { get; set; }
        public int[] ModelDraft { get; set; } = [];
    }

    private long _nextSession = 1000;

    public int Preemptions { get; private set; }
    /// <summary>Passes that carried a draft, drafted tokens, and drafted tokens accepted (speculative runs).</summary>
    public (int Passes, int Drafted, int Accepted) Speculation { get; private set; }
    public int Rounds { get; private set; }

    /// <summary>Runs all jobs to completion; returns each job's new tokens (greedy).</summary>
    public List<int>[] Run(IReadOnlyList<DriverJob> jobs, int maxRounds = 100_000)
    {
        var states = jobs.Select((j, i) => new State(j, i)).ToList();
        int finished = 0;
        for (int round = 0; finished < jobs.Count; round++)
        {
            if (round > maxRounds) throw new TimeoutException($"jobs not done after {maxRounds} rounds ({finished}/{jobs.Count} finished)");
            foreach (var s in states.Where(s => s.Job.ArrivesAt == round)) Submit(s);
            for (int h = 0; h < hosts.Count; h++)
            {
                if (!hosts[h].HasWork) continue;
                var done = hosts[h].RunIteration();
                foreach (var c in done)
                {
                    var s = (State)c.State!;
                    if (c.Error is { } e)
                    {
                        if (e.Code == ErrorCode.Cancelled || c.Request.SessionId != s.Session) continue; // a closed or abandoned session
                        if (e.Code is not (ErrorCode.Overloaded or ErrorCode.UnknownSession))
                            throw new InvalidOperationException($"job {s.Index} step {c.Request.Step} failed: {e.Code} {e.Message}");
                        // Recovery as the coordinator does it: a fresh session replays everything so far.
                        Preemptions++;
                        foreach (var host in hosts) host.Close(s.Session);
                        s.Cached = 0;
                        Submit(s);
                        continue;
                    }
                    if (c.Output!.Hidden is { } hidden)
                    {
                        hosts[h + 1].Submit(c.Request with { Route = c.Request.Route[1..], Input = hidden }, s);
                        continue;
                    }
                    var draft = c.Request.Draft;
                    int[] produced = draft.Length == 0 ? [c.Output.Token!.Value] : c.Output.Accepted;
                    if (draft.Length > 0)
                    {
                        if (produced.Length == 0 || produced.Length > draft.Length + 1 || !produced[..^1].SequenceEqual(draft[..(produced.Length - 1)]))
                            throw new InvalidOperationException($"job {s.Index} step {c.Request.Step}: accepted [{string.Join(",", produced)}] for draft [{string.Join(",", draft)}]");
                        var (p, d, a) = Speculation;
                        Speculation = (p + 1, d + draft.Length, a + produced.Length - 1);
                    }
                    s.Tokens.AddRange(produced);
                    s.ModelDraft = c.Output.Drafted;
                    s.Cached = s.Job.Prompt.Length + s.Tokens.Count - 1;
                    if (s.Tokens.Count == s.Job.MaxNew)
                    {
                        foreach (var host in hosts) host.Close(s.Session);
                        finished++;
                    }
                    else Submit(s);
                }
            }
            Rounds = round + 1;
        }
        return states.Select(s => s.Tokens).ToArray();
    }

    private void Submit(State s)
    {
        if (s.Cached == 0) s.Session = _nextSession++;
        int room = s.Job.MaxNew - s.Tokens.Count - 1;
        // A model's draft follows the tokens it was drafted after; a replay from position 0 (preemption) verifies it too.
        int[] draft = modelDraft > 0 ? s.ModelDraft[..Math.Min(room, s.ModelDraft.Length)] : drafter?.Invoke(s.Index, s.Tokens, room) ?? [];
        var all = s.Job.Prompt.Concat(s.Tokens.Select(t => (long)t)).Concat(draft.Select(t => (long)t)).ToArray();
        int[] context = [.. all[s.Cached..^draft.Length].Select(t => (int)t)];
        var route = hosts.Select((h, i) => new Hop { NodeId = i + 1, Endpoint = $"host-{i}", Layers = h.Range }).ToArray();
        var req = new ForwardRequest
        {
            JobId = s.Index, SessionId = s.Session, Step = s.Tokens.Count,
            Kind = s.Cached == 0 ? (s.Tokens.Count == 0 ? StepKind.Prefill : StepKind.Replay) : StepKind.Decode,
            StartPosition = s.Cached, Input = WireTensor.FromTokenIds(all[s.Cached..]), Route = route,
            WireDType = WireDType.F32, Sampling = new SamplingParams { Temperature = 0 }, Draft = draft,
            DraftCount = Math.Min(modelDraft, Math.Max(room, 0)), DraftContext = modelDraft > 0 ? context : [],
        };
        hosts[0].Submit(req, s);
    }
}
