using Swarm.Coordinator.Api;
using Swarm.Coordinator.Membership;

namespace Swarm.Coordinator.Service;

/// <summary>Builds the <c>/api/swarm</c> snapshot (also the dashboard's and <c>swarm status</c>'s data).</summary>
internal static class StatusSnapshot
{
    /// <summary>The swarm now: nodes with their live figures, coverage, and jobs (running ones with their progress so far).</summary>
    public static SwarmStatus Build(SwarmCoordinator swarm, JobRunner jobs)
    {
        int layers = swarm.Config.NumLayers;
        var coverage = swarm.Registry.ServingCoverage(layers);
        var now = DateTimeOffset.UtcNow;
        var verification = swarm.Options.Verification;
        var members = swarm.Registry.Snapshot().Where(n => n.State != NodeStatus.Left).OrderBy(n => n.Id).ToList();
        var nodes = members.Select(n =>
        {
            swarm.Live.TryGetValue(n.Id, out var live);
            return new SwarmNodeStatus
            {
                Id = n.Id,
                Name = n.Info.Name,
                Address = n.Info.Endpoint,
                Key = n.Info.KeyFingerprint,
                KeyChangedFrom = n.Info.KeyChangedFrom,
                Layers = SwarmNodeStatus.LayersOf(n.Range),
                State = n.State,
                InFlight = Math.Max(n.InFlight, live?.InFlightSteps ?? 0),
                Device = n.Info.Device,
                Threads = n.Info.Threads,
                TokensPerS = Math.Round(live?.TokensPerSecond ?? 0, 2),
                KvTokensUsed = live?.KvTokensUsed ?? 0,
                KvTokensCapacity = live?.KvTokensCapacity ?? 0,
                Sessions = live?.Sessions ?? 0,
                KvBlocksUsed = live?.KvBlocksUsed ?? 0,
                KvBlocksTotal = live?.KvBlocksTotal ?? 0,
                WaitingSessions = live?.WaitingSessions ?? 0,
                LastHeartbeatMsAgo = (long)Math.Max(0, (now - n.LastHeartbeat).TotalMilliseconds),
                Checks = new SwarmNodeChecks
                {
                    Passed = n.ChecksPassed, Failed = n.ChecksFailed, Probation = !n.Banned && verification.IsOnProbation(n.ChecksPassed, n.ChecksFailed),
                },
                Relay = n.Info.OffersRelay ? SwarmRelayStatus.From(live?.Relay ?? new Protocol.RelayUsage()) : null,
            };
        }).ToList();
        var replicas = coverage.Replicas.ToList();
        return new SwarmStatus
        {
            Model = swarm.ModelName,
            NumLayers = layers,
            Covered = coverage.IsCovered,
            Coverage = replicas,
            Uncovered = SwarmStatus.DescribeUncovered(replicas),
            Nodes = nodes,
            Links = Links(members, swarm.Links),
            Relay = SwarmRelayStatus.From(swarm.OwnRelayUsage),
            Jobs = new SwarmJobsStatus
            {
                Queued = jobs.Queued,
                Running = jobs.Running,
                Completed = jobs.Completed,
                Failed = jobs.Failed,
                Cancelled = jobs.Cancelled,
                Rejected = jobs.Rejected,
                Recent = jobs.Recent.Select(j => new SwarmJobStatus
                {
                    Id = j.Id,
                    State = j.State switch
                    {
                        "done" => SwarmJobState.Done, "failed" => SwarmJobState.Failed, "cancelled" => SwarmJobState.Cancelled,
                        "queued" => SwarmJobState.Queued, _ => SwarmJobState.Running,
                    },
                    PromptTokens = j.PromptTokens,
                    CompletionTokens = j.CompletionTokens,
                    TtftMs = j.TtftMs is double t ? Math.Round(t, 2) : null,
                    TokensPerS = j.TokensPerSecond is double r ? Math.Round(r, 2) : null,
                    Recoveries = j.Recoveries,
                    Error = j.Error,
                    FinishedAgoS = j.FinishedAt is { } f ? Math.Round((now - f).TotalSeconds, 1) : null,
                }).ToList(),
            },
            Recoveries = swarm.Recoveries,
            UptimeS = Math.Round((now - swarm.StartedAt).TotalSeconds, 1),
            WireDtype = swarm.Wire == Protocol.WireDType.F32 ? "f32" : "f16",
        };
    }

    /// <summary>
    /// Each live node's link to the coordinator, then the node-to-node links it reported (to live members only); a relayed
    /// one names its relay as the coordinator planned it (<paramref name="planned"/>).
    /// </summary>
    private static List<SwarmLinkStatus> Links(IReadOnlyList<NodeSnapshot> members, IReadOnlyList<Nat.PlannedLink> planned)
    {
        var alive = members.Where(n => n.State != NodeStatus.Dead).ToList();
        var names = alive.ToDictionary(n => n.Id, n => n.Info.Name);
        var relays = planned.Where(p => p.Relay.Length > 0).ToDictionary(p => (p.From, p.To), p => p.Relay);
        var links = alive.Select(n => new SwarmLinkStatus
        {
            From = n.Info.Name, To = "coordinator", Path = Protocol.HopPath.Direct,
            RttMs = n.RttMs is double rtt ? Math.Round(rtt, 2) : null,
        }).ToList();
        foreach (var n in alive)
            foreach (var l in n.Links.OrderBy(l => l.ToNodeId))
                if (names.TryGetValue(l.ToNodeId, out string? to))
                    links.Add(new SwarmLinkStatus
                    {
                        From = n.Info.Name, To = to, Path = l.Path, RttMs = Math.Round(l.RttMs, 2),
                        Via = l.Path == Protocol.HopPath.Relayed ? relays.GetValueOrDefault((n.Id, l.ToNodeId)) : null,
                    });
        return links;
    }
}
