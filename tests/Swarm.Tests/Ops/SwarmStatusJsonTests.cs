using System.Text.Json;
using Swarm.Coordinator.Api;
using Swarm.Coordinator.Membership;
using Xunit;

namespace Swarm.Tests.Ops;

/// <summary>The <c>/api/swarm</c> JSON contract: names, casing, nulls.</summary>
public sealed class SwarmStatusJsonTests
{
    private static IEnumerable<string> Keys(JsonElement e) => e.EnumerateObject().Select(p => p.Name).Order(StringComparer.Ordinal);

    private static string[] Sorted(params string[] names) => [.. names.Order(StringComparer.Ordinal)];

    [Fact]
    public void ToJson_TwoNodes_HasExactlyTheContractFields()
    {
        using var doc = JsonDocument.Parse(OpsTestData.TwoNodes().ToJson());
        var root = doc.RootElement;

        Assert.Equal(Sorted("model", "num_layers", "covered", "coverage", "uncovered", "nodes", "links", "relay", "jobs", "recoveries", "uptime_s", "wire_dtype"), Keys(root));
        Assert.Equal(Sorted("from", "to", "path", "rtt_ms", "via"), Keys(root.GetProperty("links")[0]));
        Assert.Equal("relayed", root.GetProperty("links")[2].GetProperty("path").GetString());
        Assert.Equal("node-gamma", root.GetProperty("links")[2].GetProperty("via").GetString());
        Assert.Equal(JsonValueKind.Null, root.GetProperty("links")[0].GetProperty("via").ValueKind);
        Assert.Equal(Sorted("id", "name", "address", "key", "key_changed_from", "layers", "state", "in_flight", "device", "threads", "tokens_per_s",
            "kv_tokens_used", "kv_tokens_capacity", "sessions", "kv_blocks_used", "kv_blocks_total", "waiting_sessions", "last_heartbeat_ms_ago", "checks", "relay"), Keys(root.GetProperty("nodes")[0]));
        Assert.Equal(Sorted("queued", "running", "completed", "failed", "cancelled", "rejected", "recent"), Keys(root.GetProperty("jobs")));
        Assert.Equal("cancelled", root.GetProperty("jobs").GetProperty("recent")[3].GetProperty("state").GetString());
        Assert.Equal(Sorted("id", "state", "prompt_tokens", "completion_tokens", "ttft_ms", "tokens_per_s", "recoveries", "error", "finished_ago_s"),
            Keys(root.GetProperty("jobs").GetProperty("recent")[0]));

        Assert.Equal("layers 10-11", root.GetProperty("uncovered").GetString());
        Assert.Equal("[1,1,1,1,1,1,2,2,1,1,0,0]", root.GetProperty("coverage").GetRawText());
        var beta = root.GetProperty("nodes")[1];
        Assert.Equal("suspect", beta.GetProperty("state").GetString());
        Assert.Equal("[6,10]", beta.GetProperty("layers").GetRawText());
        Assert.Equal(2, beta.GetProperty("id").GetInt32());
        var running = root.GetProperty("jobs").GetProperty("recent")[0];
        Assert.Equal("running", running.GetProperty("state").GetString());
        Assert.Equal(JsonValueKind.Null, running.GetProperty("error").ValueKind);
        Assert.Equal(JsonValueKind.Null, running.GetProperty("finished_ago_s").ValueKind);
    }

    [Fact]
    public void ToJson_CoveredAndRangeless_WritesNulls()
    {
        var s = OpsTestData.TwoNodes();
        s = s with
        {
            Covered = true, Coverage = [1, 1], NumLayers = 2, Uncovered = null,
            Nodes = [s.Nodes[0] with { Layers = null, State = NodeStatus.Joining }],
        };
        using var doc = JsonDocument.Parse(s.ToJson());
        Assert.Equal(JsonValueKind.Null, doc.RootElement.GetProperty("uncovered").ValueKind);
        Assert.Equal(JsonValueKind.Null, doc.RootElement.GetProperty("nodes")[0].GetProperty("layers").ValueKind);
        Assert.Equal("joining", doc.RootElement.GetProperty("nodes")[0].GetProperty("state").GetString());
    }

    [Fact]
    public void FromJson_ContractExample_Parses()
    {
        const string json = """
            { "model": "pythia-160m", "num_layers": 4, "covered": false, "coverage": [2,2,1,0], "uncovered": "layer 3",
              "nodes": [ { "id": 1, "name": "node-1", "address": "127.0.0.1:41234", "key": "swarm:q3k7abcdefghijkl", "key_changed_from": null, "layers": [0, 4], "state": "serving", "in_flight": 0,
                           "device": "cpu", "threads": 2, "tokens_per_s": 123.4, "kv_tokens_used": 0, "kv_tokens_capacity": 8192,
                           "sessions": 0, "kv_blocks_used": 0, "kv_blocks_total": 512, "waiting_sessions": 0, "last_heartbeat_ms_ago": 120, "checks": { "passed": 7, "failed": 0, "probation": false },
                           "relay": { "hops": 1, "datagrams": 420, "bytes": 61234 } },
                         { "id": 2, "name": "node-2", "address": "127.0.0.1:41235", "key": "swarm:mnopqrstuvwxyz23", "key_changed_from": "swarm:q3k7abcdefghijkl", "layers": null, "state": "banned", "in_flight": 1,
                           "device": "cuda:0", "threads": 8, "tokens_per_s": 0, "kv_tokens_used": 10, "kv_tokens_capacity": 100,
                           "sessions": 1, "kv_blocks_used": 1, "kv_blocks_total": 7, "waiting_sessions": 0, "last_heartbeat_ms_ago": 5, "checks": { "passed": 2, "failed": 1, "probation": true }, "relay": null } ],
              "jobs": { "queued": 0, "running": 1, "completed": 10, "failed": 0, "cancelled": 2, "rejected": 1,
                        "recent": [ { "id": "cmpl-1", "state": "done", "prompt_tokens": 5, "completion_tokens": 24, "ttft_ms": 12.3,
                                      "tokens_per_s": 40.1, "recoveries": 0, "error": null, "finished_ago_s": 3.2 },
                                    { "id": "cmpl-2", "state": "cancelled", "prompt_tokens": 5, "completion_tokens": 3, "ttft_ms": 11.5,
                                      "tokens_per_s": 38.5, "recoveries": 0, "error": "the client went away", "finished_ago_s": 4.5 } ] },
              "links": [ { "from": "node-1", "to": "coordinator", "path": "direct", "rtt_ms": 0.4, "via": null },
                         { "from": "node-1", "to": "node-2", "path": "punched", "rtt_ms": 12.5, "via": null },
                         { "from": "node-2", "to": "coordinator", "path": "direct", "rtt_ms": null, "via": null },
                         { "from": "node-2", "to": "node-3", "path": "relayed", "rtt_ms": 30.1, "via": "node-1" } ],
              "relay": { "hops": 0, "datagrams": 0, "bytes": 0 },
              "recoveries": 0, "uptime_s": 12.3, "wire_dtype": "f16" }
            """;
        var s = SwarmStatus.FromJson(json);
        Assert.Equal(NodeStatus.Serving, s.Nodes[0].State);
        Assert.Equal("0:4", s.Nodes[0].RangeText);
        Assert.Null(s.Nodes[1].Range);
        Assert.Equal("-", s.Nodes[1].RangeText);
        Assert.Equal(NodeStatus.Banned, s.Nodes[1].State);
        Assert.Equal((7, 0), (s.Nodes[0].Checks.Passed, s.Nodes[0].Checks.Failed));
        Assert.Equal((2, 1, true), (s.Nodes[1].Checks.Passed, s.Nodes[1].Checks.Failed, s.Nodes[1].Checks.Probation));
        Assert.Equal("swarm:q3k7abcdefghijkl", s.Nodes[0].Key);
        Assert.Equal(s.Nodes[0].Key, s.Nodes[1].KeyChangedFrom);
        Assert.Equal(SwarmJobState.Done, s.Jobs.Recent[0].State);
        Assert.Equal(3.2, s.Jobs.Recent[0].FinishedAgoS);
        Assert.Equal(SwarmJobState.Cancelled, s.Jobs.Recent[1].State);
        Assert.Equal((2L, 1L), (s.Jobs.Cancelled, s.Jobs.Rejected));
        Assert.Equal(("node-2", Swarm.Protocol.HopPath.Punched, 12.5), (s.Links[1].To, s.Links[1].Path, s.Links[1].RttMs));
        Assert.Null(s.Links[2].RttMs);
        Assert.Equal((Swarm.Protocol.HopPath.Relayed, "node-1"), (s.Links[3].Path, s.Links[3].Via));
        Assert.Equal((1, 420L, 61234L), (s.Nodes[0].Relay!.Hops, s.Nodes[0].Relay!.Datagrams, s.Nodes[0].Relay!.Bytes));
        Assert.Null(s.Nodes[1].Relay);
        Assert.Equal(0, s.Relay!.Bytes);
        using var minified = JsonDocument.Parse(json);
        Assert.Equal(JsonSerializer.Serialize(minified.RootElement), s.ToJson());
    }

    [Theory]
    [InlineData("\"sleeping\"")]
    [InlineData("2")]
    public void FromJson_UnknownNodeState_Throws(string state)
    {
        string json = OpsTestData.TwoNodes().ToJson().Replace("\"suspect\"", state);
        Assert.Throws<JsonException>(() => SwarmStatus.FromJson(json));
    }

    [Fact]
    public void FromJson_MissingRequiredField_Throws()
    {
        string json = OpsTestData.TwoNodes().ToJson().Replace("\"model\":\"pythia-160m\",", "");
        var e = Assert.Throws<JsonException>(() => SwarmStatus.FromJson(json));
        Assert.Contains("model", e.Message);
    }

    [Theory]
    [InlineData(new[] { 1, 2, 1 }, null)]
    [InlineData(new[] { 0, 1, 1 }, "layer 0")]
    [InlineData(new[] { 1, 0, 0, 1, 0 }, "layers 1-2, layer 4")]
    [InlineData(new[] { 0, 0, 0, 0 }, "layers 0-3")]
    public void DescribeUncovered_Gaps_WordedLikeTheCoordinator(int[] coverage, string? expected) =>
        Assert.Equal(expected, SwarmStatus.DescribeUncovered(coverage));
}
