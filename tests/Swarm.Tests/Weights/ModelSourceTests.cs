using Swarm.Weights;
using Xunit;

namespace Swarm.Tests.Weights;

/// <summary>Repository URLs in the hub's layout: the base with a revision, or a resolve URL that names it.</summary>
public sealed class ModelSourceTests
{
    [Theory]
    [InlineData("https://huggingface.co/EleutherAI/pythia-1.4b", "step143000", "https://huggingface.co/EleutherAI/pythia-1.4b/resolve/step143000/")]
    [InlineData("https://huggingface.co/EleutherAI/pythia-1.4b/", null, "https://huggingface.co/EleutherAI/pythia-1.4b/resolve/main/")]
    [InlineData("http://127.0.0.1:8000/org/name/resolve/step1000", null, "http://127.0.0.1:8000/org/name/resolve/step1000/")]
    [InlineData("http://127.0.0.1:8000/org/name/resolve/step1000/", "step1000", "http://127.0.0.1:8000/org/name/resolve/step1000/")]
    [InlineData("https://hub.example/org/name", "refs/pr/1", "https://hub.example/org/name/resolve/refs%2Fpr%2F1/")]
    public void Parse_BaseOrResolveUrl_GivesTheResolveBase(string url, string? revision, string expected)
    {
        var source = ModelSource.Parse(url, revision);
        Assert.Equal(expected, source.Key);
        Assert.Equal(expected + "model-00001-of-00002.safetensors", source.FileUri("model-00001-of-00002.safetensors").AbsoluteUri);
    }

    [Theory]
    [InlineData("ftp://host/org/name", null, "http(s)")]
    [InlineData("not a url", null, "http(s)")]
    [InlineData("https://host/", null, "names no repository")]
    [InlineData("https://host/org/name/resolve/main/config.json", null, "without a file name")]
    [InlineData("https://host/org/name/resolve/step1", "step2", "'step1'")]
    [InlineData("https://host/org/name?x=1", null, "query")]
    public void Parse_BadUrl_SaysWhy(string url, string? revision, string expected)
    {
        var e = Assert.Throws<ArgumentException>(() => ModelSource.Parse(url, revision));
        Assert.Contains(expected, e.Message);
    }
}
