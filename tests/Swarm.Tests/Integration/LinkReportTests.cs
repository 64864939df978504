using System.Text.Json.Nodes;
using Swarm.Cli;
using Swarm.Tests.Model;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Integration;

/// <summary>Measured links through real processes: the first stage reports its link to the second, /api/swarm lists it.</summary>
[Collection("processes")]
public class LinkReportTests(ITestOutputHelper output)
{
    [Fact]
    public async Task TwoStages_AfterAJob_ApiSwarmListsTheMeasuredLinkBetweenThem_AndEachNodesLinkToTheCoordinator()
    {
        using var fx = new Fixture(Fixture.Tiny);
        await using var swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
        {
            Model = fx.CheckpointDir, Nodes = 2, Layers = ["0:2", "2:4"], ThreadsPerNode = 1,
        }, output.WriteLine);
        var status = (await swarm.GetJsonAsync("/api/swarm"))!;
        Assert.DoesNotContain(Links(status), l => (string)l["to"]! != "coordinator"); // nothing handed on yet

        await SwarmClient.CompleteAsync(swarm.HttpUrl, [1, 2, 3], 24);

        // node-1 handed steps to node-2: its heartbeats carry the link once the transport's ping measured it (~1 s).
        JsonNode? link = null;
        for (int attempt = 0; attempt < 100 && link is null; attempt++)
        {
            await Task.Delay(100);
            status = (await swarm.GetJsonAsync("/api/swarm"))!;
            link = Links(status).SingleOrDefault(l => (string)l["from"]! == "node-1" && (string)l["to"]! == "node-2");
        }
        output.WriteLine(status["links"]!.ToJsonString());
        Assert.NotNull(link);
        Assert.Equal("direct", (string)link["path"]!);
        Assert.InRange((double)link["rtt_ms"]!, 0.0, 1000.0);
        foreach (string node in new[] { "node-1", "node-2" })
            Assert.Single(Links(status), l => (string)l["from"]! == node && (string)l["to"]! == "coordinator" && (string)l["path"]! == "direct");
        // node-2 is the last stage: it hands tokens to the coordinator, not to another node.
        Assert.DoesNotContain(Links(status), l => (string)l["from"]! == "node-2" && (string)l["to"]! != "coordinator");
    }

    private static IEnumerable<JsonNode> Links(JsonNode status) => status["links"]!.AsArray().Select(l => l!);
}
