using Swarm.Transport;
using Xunit;

namespace Swarm.Tests.Transport;

public class ReassemblerTests
{
    private static byte[] Chunk(uint transfer, int index, int count, int total, int chunkSize, byte fill)
    {
        int len = index < count - 1 ? chunkSize : total - chunkSize * (count - 1);
        var frame = new byte[Framing.ChunkHeaderSize + len];
        Framing.WriteChunkHeader(frame, transfer, index, count, total, chunkSize);
        frame.AsSpan(Framing.ChunkHeaderSize).Fill(fill);
        return frame;
    }

    [Fact]
    public void Accept_ChunksOutOfOrder_CompletesWithBytesInPlace()
    {
        var r = new Reassembler(1000, 1000, TimeSpan.FromSeconds(1));
        var peer = new object();
        Assert.Equal(FrameResult.Partial, r.Accept(peer, Chunk(1, 2, 3, 25, 10, 3), out _, out _));
        Assert.Equal(FrameResult.Partial, r.Accept(peer, Chunk(1, 0, 3, 25, 10, 1), out _, out _));
        Assert.Equal(25, r.PendingBytes);
        Assert.Equal(FrameResult.Complete, r.Accept(peer, Chunk(1, 1, 3, 25, 10, 2), out var msg, out _));
        Assert.Equal(Enumerable.Repeat((byte)1, 10).Concat(Enumerable.Repeat((byte)2, 10)).Concat(Enumerable.Repeat((byte)3, 5)), msg);
        r.Release(msg!.Length);
        Assert.Equal(0, r.PendingBytes);
    }

    [Fact]
    public void Accept_OverBudget_DropsTransferAndIgnoresItsLaterChunks()
    {
        var r = new Reassembler(30, 1000, TimeSpan.FromSeconds(1));
        var peer = new object();
        Assert.Equal(FrameResult.Partial, r.Accept(peer, Chunk(1, 0, 3, 25, 10, 1), out _, out _));
        Assert.Equal(FrameResult.Dropped, r.Accept(peer, Chunk(2, 0, 2, 20, 10, 1), out _, out var error));
        Assert.Equal("message of 20 bytes dropped: 25 bytes of inbound messages pending, budget 30", error);
        Assert.Equal(FrameResult.Ignored, r.Accept(peer, Chunk(2, 1, 2, 20, 10, 1), out _, out _));
        Assert.Equal(25, r.PendingBytes);
    }

    [Fact]
    public void Accept_TooLarge_Dropped()
    {
        var r = new Reassembler(10_000, 100, TimeSpan.FromSeconds(1));
        Assert.Equal(FrameResult.Dropped, r.Accept(new object(), Chunk(1, 0, 20, 200, 10, 1), out _, out var error));
        Assert.Equal("message of 200 bytes exceeds the limit of 100", error);
        Assert.Equal(0, r.PendingBytes);
    }

    [Theory]
    [InlineData(0, 3, 25, 9, "chunk 0 carries 10 bytes, expected 9")]
    [InlineData(3, 3, 25, 10, "chunk index 3 outside 0..2")]
    [InlineData(0, 2, 25, 10, "chunk header inconsistent (total 25, chunk size 10, count 2)")]
    [InlineData(0, 3, -5, 10, "chunk header inconsistent (total -5, chunk size 10, count 3)")]
    public void Accept_BadHeader_Malformed(int index, int count, int total, int chunkSize, string expected)
    {
        var r = new Reassembler(1000, 1000, TimeSpan.FromSeconds(1));
        var frame = new byte[Framing.ChunkHeaderSize + 10];
        Framing.WriteChunkHeader(frame, 1, index, count, total, chunkSize);
        Assert.Equal(FrameResult.Malformed, r.Accept(new object(), frame, out _, out var error));
        Assert.Equal(expected, error);
        Assert.Equal(0, r.PendingBytes);
    }

    [Fact]
    public void Accept_DuplicateChunk_Malformed()
    {
        var r = new Reassembler(1000, 1000, TimeSpan.FromSeconds(1));
        var peer = new object();
        r.Accept(peer, Chunk(1, 0, 3, 25, 10, 1), out _, out _);
        Assert.Equal(FrameResult.Malformed, r.Accept(peer, Chunk(1, 0, 3, 25, 10, 1), out _, out var error));
        Assert.Equal("duplicate chunk 0 of transfer 1", error);
    }

    [Fact]
    public void Sweep_StalledTransfer_DroppedAndBudgetReturned()
    {
        long now = 0;
        var r = new Reassembler(1000, 1000, TimeSpan.FromSeconds(1), () => now);
        var peer = new object();
        r.Accept(peer, Chunk(7, 0, 3, 25, 10, 1), out _, out _);
        now = 500;
        Assert.Empty(r.Sweep());
        now = 1600;
        var dropped = Assert.Single(r.Sweep());
        Assert.Equal("transfer 7: 1 of 3 chunks (25 bytes) after 1600 ms without progress", dropped);
        Assert.Equal(0, r.PendingBytes);
        Assert.Equal(FrameResult.Ignored, r.Accept(peer, Chunk(7, 1, 3, 25, 10, 1), out _, out _));
    }

    [Fact]
    public void RemovePeer_ReleasesItsPartials()
    {
        var r = new Reassembler(1000, 1000, TimeSpan.FromSeconds(1));
        var a = new object();
        var b = new object();
        r.Accept(a, Chunk(1, 0, 3, 25, 10, 1), out _, out _);
        r.Accept(b, Chunk(1, 0, 3, 25, 10, 1), out _, out _);
        r.RemovePeer(a);
        Assert.Equal(25, r.PendingBytes);
        Assert.Equal(1, r.PartialCount);
    }

    [Fact]
    public void Accept_UnknownFrameType_Malformed()
    {
        var r = new Reassembler(1000, 1000, TimeSpan.FromSeconds(1));
        Assert.Equal(FrameResult.Malformed, r.Accept(new object(), new byte[] { 0x09, 1 }, out _, out var error));
        Assert.Equal("unknown frame type 0x09", error);
    }
}
