using Swarm.Node;
using Xunit;

namespace Swarm.Tests.Node;

/// <summary>The compute thread's handoff to the forwarder: writes never wait while there is room, block when full, resume on a read.</summary>
public class BoundedHandoffTests
{
    [Fact]
    public async Task Write_ReturnsAtOnceWhileThereIsRoom_BlocksWhenFull_ResumesWhenTheReaderTakesOne()
    {
        var handoff = new BoundedHandoff<int>(2);
        Assert.True(handoff.Write(1, CancellationToken.None));   // no reader yet: still returns at once
        Assert.True(handoff.Write(2, CancellationToken.None));
        using var wrote = new ManualResetEventSlim();
        var producer = new Thread(() => { handoff.Write(3, CancellationToken.None); wrote.Set(); });
        producer.Start();
        Assert.False(wrote.Wait(TimeSpan.FromMilliseconds(200)));  // full: the third write waits

        await using var reader = handoff.ReadAllAsync().GetAsyncEnumerator();
        Assert.True(await reader.MoveNextAsync());
        Assert.Equal(1, reader.Current);
        Assert.True(wrote.Wait(TimeSpan.FromSeconds(10)));         // one read made room
        producer.Join();
        handoff.Complete();
        var rest = new List<int>();
        while (await reader.MoveNextAsync()) rest.Add(reader.Current);
        Assert.Equal([2, 3], rest);
        Assert.False(handoff.Write(4, CancellationToken.None));    // completed: not queued
    }

    [Fact]
    public void Write_WhenFull_GivesUpOnCancellation()
    {
        var handoff = new BoundedHandoff<int>(1);
        handoff.Write(1, CancellationToken.None);
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(50));
        Assert.ThrowsAny<OperationCanceledException>(() => handoff.Write(2, cts.Token));
        Assert.Equal(1, handoff.Count);
    }
}
