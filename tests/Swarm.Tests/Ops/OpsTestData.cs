using Swarm.Coordinator.Api;
using Swarm.Coordinator.Membership;

namespace Swarm.Tests.Ops;

/// <summary>Canned statuses for the dashboard and <c>swarm status</c> tests.</summary>
internal static class OpsTestData
{
    /// <summary>
    /// pythia-160m (12 layers) on two nodes: alpha serves 0:8, beta is suspect on 6:10, so layers 10-11 are
    /// uncovered; alpha hands steps to beta over a relayed link; four recent jobs (running, done, failed, cancelled).
    /// </summary>
    public static SwarmStatus TwoNodes()
    {
        int[] coverage = [1, 1, 1, 1, 1, 1, 2, 2, 1, 1, 0, 0];
        return new SwarmStatus
        {
            Model = "pythia-160m",
            NumLayers = 12,
            Covered = false,
            Coverage = coverage,
            Uncovered = SwarmStatus.DescribeUncovered(coverage),
            Nodes =
            [
                new SwarmNodeStatus
                {
                    Id = 1, Name = "node-alpha", Address = "127.0.0.1:41234", Layers = [0, 8], State = NodeStatus.Serving,
                    InFlight = 2, Device = "cpu", Threads = 2, TokensPerS = 123.4, KvTokensUsed = 1536, KvTokensCapacity = 8192,
                    Sessions = 3, LastHeartbeatMsAgo = 120,
                },
                new SwarmNodeStatus
                {
                    Id = 2, Name = "node-beta", Address = "127.0.0.1:41235", Layers = [6, 10], State = NodeStatus.Suspect,
                    InFlight = 0, Device = "cuda:0", Threads = 4, TokensPerS = 87.34, KvTokensUsed = 7900, KvTokensCapacity = 8192,
                    Sessions = 1, LastHeartbeatMsAgo = 2600,
                },
            ],
            Jobs = new SwarmJobsStatus
            {
                Queued = 1, Running = 1, Completed = 10, Failed = 1, Cancelled = 2, Rejected = 3,
                Recent =
                [
                    new SwarmJobStatus { Id = "cmpl-running1", State = SwarmJobState.Running, PromptTokens = 7, CompletionTokens = 3, TtftMs = 15.5 },
                    new SwarmJobStatus { Id = "cmpl-done0001", State = SwarmJobState.Done, PromptTokens = 5, CompletionTokens = 24, TtftMs = 12.3, TokensPerS = 40.1, Recoveries = 1, FinishedAgoS = 3.2 },
                    new SwarmJobStatus { Id = "cmpl-failed01", State = SwarmJobState.Failed, PromptTokens = 9, CompletionTokens = 2, TtftMs = 20.0, TokensPerS = 10.0, Error = "layers 10-11 are not served by any node", FinishedAgoS = 8.0 },
                    new SwarmJobStatus { Id = "cmpl-cancel01", State = SwarmJobState.Cancelled, PromptTokens = 4, CompletionTokens = 6, TtftMs = 9.5, TokensPerS = 30.0, Error = "the client went away", FinishedAgoS = 9.0 },
                ],
            },
            Links =
            [
                new SwarmLinkStatus { From = "node-alpha", To = "coordinator", Path = Swarm.Protocol.HopPath.Direct, RttMs = 0.42 },
                new SwarmLinkStatus { From = "node-beta", To = "coordinator", Path = Swarm.Protocol.HopPath.Direct },
                new SwarmLinkStatus { From = "node-alpha", To = "node-beta", Path = Swarm.Protocol.HopPath.Relayed, RttMs = 61.5, Via = "node-gamma" },
            ],
            Recoveries = 4,
            UptimeS = 3723.4,
            WireDtype = "f16",
        };
    }
}
