using System.Collections.Concurrent;
using Swarm.Coordinator.Verification;

namespace Swarm.Coordinator.Jobs;

/// <summary>
/// What a job must generate again, collected between its steps: bans of nodes (from any job's checks, through the
/// <see cref="BanBoard"/>) — the job's tokens through the node since its last passed check — and this job's own checks
/// that failed or found no majority (<see cref="Suspect"/>) — its tokens from the checked step on. <see cref="Collect"/>
/// turns them into the first token to drop, or fails the job when such a token was already streamed or scored.
/// </summary>
internal sealed class JobRewinds : IDisposable
{
    private readonly BanBoard? _bans;
    private readonly ConcurrentQueue<NodeBan> _banned = new();
    private readonly Queue<(int From, string Reason, string Code)> _suspect = new();

    /// <summary>Listens to <paramref name="bans"/> (none when null) until disposed.</summary>
    public JobRewinds(BanBoard? bans)
    {
        _bans = bans;
        if (bans is not null) bans.Banned += OnBan;
    }

    /// <summary>
    /// The job's tokens from <paramref name="from"/> on are not to be trusted (their step's check caught a node or was
    /// undecided); <paramref name="code"/> is the error when they were already streamed.
    /// </summary>
    public void Suspect(int from, string reason, string code) => _suspect.Enqueue((from, reason, code));

    /// <summary>
    /// The first of the job's tokens to drop (<paramref name="through"/>.Count when none), and whether a node of
    /// <paramref name="route"/> (the current session's) was banned.
    /// </summary>
    /// <param name="through">Per accepted token: when its step was answered and the route's nodes.</param>
    /// <param name="sent">Tokens already sent to the client.</param>
    /// <param name="scored">Whether the tokens were shown with logprobs (they can never be taken back).</param>
    /// <param name="route">The current session's nodes, or empty.</param>
    /// <exception cref="JobFailedException">A token to drop was already sent or scored (502, <c>node_banned</c> or <c>unverified</c>).</exception>
    public (int From, bool RouteBanned) Collect(IReadOnlyList<(DateTimeOffset At, int[] Nodes)> through, int sent, bool scored, IEnumerable<int> route)
    {
        int from = through.Count;
        bool routeBanned = false;
        while (_banned.TryDequeue(out var ban))
        {
            // A token answered at the very instant of the node's last passed check counts as checked (it may be that check's).
            int first = -1;
            for (int i = 0; i < through.Count && first < 0; i++)
                if (through[i].At > ban.Since && through[i].Nodes.Contains(ban.NodeId)) first = i;
            if (first >= 0 && (first < sent || scored))
                throw new JobFailedException($"node {ban.NodeId} was banned ({ban.Reason}); tokens from #{first} on went through it and were already streamed or scored",
                    502, "node_banned");
            if (first >= 0) from = Math.Min(from, first);
            routeBanned |= route.Contains(ban.NodeId);
        }
        while (_suspect.TryDequeue(out var suspect))
        {
            if (suspect.From >= through.Count) continue;
            if (suspect.From < sent || scored)
                throw new JobFailedException($"{suspect.Reason}; tokens from #{suspect.From} on were already streamed or scored", 502, suspect.Code);
            from = Math.Min(from, suspect.From);
        }
        return (from, routeBanned);
    }

    /// <summary>Stops listening to bans.</summary>
    public void Dispose()
    {
        if (_bans is not null) _bans.Banned -= OnBan;
    }

    private void OnBan(NodeBan ban) => _banned.Enqueue(ban);
}
