using Swarm.Coordinator.Membership;
using Xunit;

namespace Swarm.Tests.Coordinator;

public class NodeKeysTests
{
    [Fact]
    public void Observe_FlagsAKnownNameWithAnotherKey_AgainstTheFirstKeySeen()
    {
        var keys = new NodeKeys();
        Assert.Null(keys.Observe("gpu-box", "swarm:aaaa"));
        Assert.Null(keys.Observe("gpu-box", "swarm:aaaa")); // a restart with the same identity file
        Assert.Equal("swarm:aaaa", keys.Observe("gpu-box", "swarm:bbbb"));
        Assert.Equal("swarm:aaaa", keys.Observe("gpu-box", "swarm:cccc"));
        Assert.Null(keys.Observe("cpu-box", "swarm:bbbb"));
    }

    [Fact]
    public void Vouch_VersionsIncrease_DuplicatesAndMalformedKeysAreLeftOut()
    {
        var keys = new NodeKeys();
        var a = Enumerable.Repeat((byte)1, 32).ToArray();
        var first = keys.Vouch([a, a.ToArray(), new byte[5]]);
        var second = keys.Vouch([]);
        Assert.Single(first.Keys);
        Assert.True(second.Version > first.Version);
        Assert.Empty(second.Keys);
    }
}
