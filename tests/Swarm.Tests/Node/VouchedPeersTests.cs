using Swarm.Node;
using Swarm.Protocol;
using Swarm.Transport.Security;
using Xunit;

namespace Swarm.Tests.Node;

public class VouchedPeersTests
{
    private static byte[] Key(byte b) => Enumerable.Repeat(b, 32).ToArray();

    [Fact]
    public void Authorize_AcceptsOnlyVouchedKeys_AndSaysWhyNot()
    {
        var vouched = new VouchedPeers();
        Assert.NotNull(vouched.Authorize(Key(1)));
        Assert.True(vouched.Update(new PeerKeys { Version = 1, Keys = [Key(1), Key(2)] }));
        Assert.Null(vouched.Authorize(Key(1)));
        Assert.Null(vouched.Authorize(Key(2)));
        Assert.Equal($"the coordinator has not vouched for {PeerKey.Fingerprint(Key(3))} (it is not a current member of this swarm)", vouched.Authorize(Key(3)));
    }

    [Fact]
    public void Update_KeepsTheNewestList_WhenListsArriveOutOfOrder()
    {
        var vouched = new VouchedPeers();
        Assert.True(vouched.Update(new PeerKeys { Version = 5, Keys = [Key(5)] }));
        Assert.False(vouched.Update(new PeerKeys { Version = 4, Keys = [Key(4)] }));
        Assert.Null(vouched.Authorize(Key(5)));
        Assert.NotNull(vouched.Authorize(Key(4)));
        Assert.True(vouched.Update(new PeerKeys { Version = 6, Keys = [] }));
        Assert.NotNull(vouched.Authorize(Key(5)));
        Assert.Equal(0, vouched.Count);
    }
}
