using Swarm.Cli;
using Swarm.Engine;
using Xunit;

namespace Swarm.Tests.Engine;

public class ThreadBudgetTests
{
    [Theory]
    [InlineData(1, 2, 2)]
    [InlineData(3, 2, 1)]   // the demo: three nodes on two cores get one thread each, not two
    [InlineData(3, 8, 2)]
    [InlineData(4, 8, 2)]
    [InlineData(16, 4, 1)]
    public void PerProcess_SharesTheCoresEquallyAndNeverGivesLessThanOne(int processes, int cores, int expected)
    {
        Assert.Equal(expected, ThreadBudget.PerProcess(processes, cores));
        Assert.True(ThreadBudget.PerProcess(processes, cores) * Math.Min(processes, cores) <= cores);
    }

    [Theory]
    [InlineData(0, 2)]
    [InlineData(2, 0)]
    public void PerProcess_NoProcessesOrNoCores_Throws(int processes, int cores) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => ThreadBudget.PerProcess(processes, cores));

    [Fact]
    public void LocalSwarmOptions_NodeThreads_GivenCountWins_OtherwiseTheNodesShareThisMachine()
    {
        Assert.Equal(3, new LocalSwarmOptions { Nodes = 3, ThreadsPerNode = 3 }.NodeThreads);
        Assert.Equal(ThreadBudget.PerProcess(3, Environment.ProcessorCount), new LocalSwarmOptions { Nodes = 3 }.NodeThreads);
        Assert.Equal(Environment.ProcessorCount, new LocalSwarmOptions { Nodes = 1 }.NodeThreads);
    }
}
