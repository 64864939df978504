using Swarm.Coordinator.Service;
using Swarm.Node;
using Xunit;

namespace Swarm.Tests.Weights;

/// <summary>The coordinator's <c>--model</c>/<c>--model-url</c>/<c>--revision</c> and the node's optional <c>--model</c>.</summary>
public class ModelUrlOptionsTests
{
    [Theory]
    [InlineData(null, null, null, "--model DIR or --model-url URL is required")]
    [InlineData("/tmp", "https://h/o/n", null, "exclude each other")]
    [InlineData(null, "ftp://h/o/n", null, "--model-url:")]
    [InlineData(null, "https://h/o/n/resolve/v1", "v2", "--model-url:")]
    [InlineData("/tmp", null, "main", "--revision needs --model-url")]
    public void Coordinator_RejectsInconsistentModelSources(string? model, string? url, string? revision, string expected)
    {
        var errors = new CoordinatorOptions { Model = model ?? "", ModelUrl = url, Revision = revision }.Validate();
        Assert.Contains(errors, e => e.Contains(expected, StringComparison.Ordinal));
    }

    [Fact]
    public void Coordinator_AcceptsAModelUrlAlone()
    {
        Assert.Empty(new CoordinatorOptions { ModelUrl = "https://huggingface.co/EleutherAI/pythia-70m", Revision = "step143000" }.Validate());
    }

    [Fact]
    public void Node_WithoutModel_FetchesWeights_AndAMissingFolderIsStillAnError()
    {
        var fetching = new NodeOptions { Coordinator = "127.0.0.1:7700" };
        Assert.Empty(fetching.Validate());
        Assert.True(fetching.FetchesWeights);
        var missing = new NodeOptions { Coordinator = "127.0.0.1:7700", Model = "/nonexistent/model" };
        Assert.Contains(missing.Validate(), e => e.Contains("folder not found", StringComparison.Ordinal));
        Assert.False(missing.FetchesWeights);
    }
}
