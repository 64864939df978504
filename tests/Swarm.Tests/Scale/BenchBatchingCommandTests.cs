using Swarm.Cli.Commands;
using Xunit;

namespace Swarm.Tests.Scale;

/// <summary><c>swarm bench batching --levels</c>: the numbers of concurrent jobs it accepts and the ones it refuses with a usage error.</summary>
public sealed class BenchBatchingCommandTests
{
    [Fact]
    public void Levels_ParsesCommaSeparatedJobCounts()
    {
        Assert.Equal([1, 16, 64], BenchBatchingCommand.Levels("1, 16 ,64"));
        Assert.Equal([8], BenchBatchingCommand.Levels("8"));
    }

    [Theory]
    [InlineData("")]
    [InlineData(",")]
    [InlineData("1,x")]
    [InlineData("0")]
    [InlineData("-4")]
    [InlineData("2000")]
    [InlineData("1.5")]
    public void Levels_RefusesWhatIsNotAJobCount(string list)
    {
        var e = Assert.Throws<UsageException>(() => BenchBatchingCommand.Levels(list));
        Assert.Contains("--levels", e.Message);
    }
}
