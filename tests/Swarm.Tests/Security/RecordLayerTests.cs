using System.Buffers.Binary;
using Swarm.Transport.Security;
using Xunit;

namespace Swarm.Tests.Security;

/// <summary>The record layer after the handshake, through real channels from a real handshake.</summary>
public class RecordLayerTests
{
    private static byte[] Payload(int i) => BitConverter.GetBytes((long)i * 7919);

    private static ulong CounterOf(byte[] record) => BinaryPrimitives.ReadUInt64LittleEndian(record.AsSpan(5));
    private static uint EpochOf(byte[] record) => BinaryPrimitives.ReadUInt32LittleEndian(record.AsSpan(1));

    [Fact]
    public void SealThenOpen_BothDirections_DeliversPayloadsAndCounts()
    {
        var (a, b) = HandshakeDriver.Establish();
        using (a) using (b)
        {
            for (int i = 0; i < 10; i++)
            {
                Assert.Equal(OpenResult.Opened, b.TryOpen(a.Seal(Payload(i)), out var p));
                Assert.Equal(Payload(i), p);
                Assert.Equal(OpenResult.Opened, a.TryOpen(b.Seal(Payload(-i)), out p));
                Assert.Equal(Payload(-i), p);
            }
            Assert.Equal(10, a.Counters.Sealed);
            Assert.Equal(11, a.Counters.Opened); // plus the responder's confirmation
            Assert.Equal(0, a.Counters.Rejected);
            Assert.Equal(a.HandshakeHash.ToArray(), b.HandshakeHash.ToArray());
        }
    }

    [Fact]
    public void Seal_PayloadNeverAppearsInTheRecord()
    {
        var (a, b) = HandshakeDriver.Establish();
        using (a) using (b)
        {
            var payload = new byte[256];
            for (int i = 0; i < payload.Length; i++) payload[i] = (byte)i;
            var record = a.Seal(payload);
            Assert.Equal(payload.Length + SecureChannel.Overhead, record.Length);
            Assert.Equal(-1, record.AsSpan().IndexOf(payload.AsSpan(0, 8)));
        }
    }

    [Fact]
    public void TryOpen_ReplayedRecord_IsRefusedAndCounted()
    {
        var (a, b) = HandshakeDriver.Establish();
        using (a) using (b)
        {
            var record = a.Seal(Payload(1));
            Assert.Equal(OpenResult.Opened, b.TryOpen(record, out _));
            Assert.Equal(OpenResult.Replayed, b.TryOpen(record, out var p));
            Assert.Empty(p);
            Assert.Equal(1, b.Counters.RejectedReplayed);
        }
    }

    [Fact]
    public void TryOpen_ReorderedWithinWindow_AcceptsEachOnce()
    {
        var (a, b) = HandshakeDriver.Establish(new RecordCipherOptions { ReplayWindow = 64 });
        using (a) using (b)
        {
            var records = Enumerable.Range(0, 60).Select(i => a.Seal(Payload(i))).ToArray();
            var order = Enumerable.Range(0, 60).Reverse().ToArray(); // newest first: 59 behind at most
            foreach (int i in order)
            {
                Assert.Equal(OpenResult.Opened, b.TryOpen(records[i], out var p));
                Assert.Equal(Payload(i), p);
            }
            foreach (int i in order) Assert.Equal(OpenResult.Replayed, b.TryOpen(records[i], out _));
            Assert.Equal(60, b.Counters.RejectedReplayed);
        }
    }

    [Fact]
    public void TryOpen_BehindTheWindow_IsRefusedAsTooOld()
    {
        var (a, b) = HandshakeDriver.Establish(new RecordCipherOptions { ReplayWindow = 64 });
        using (a) using (b)
        {
            var records = Enumerable.Range(0, 66).Select(i => a.Seal(Payload(i))).ToArray(); // counters 0..65
            Assert.Equal(OpenResult.Opened, b.TryOpen(records[65], out _));
            Assert.Equal(OpenResult.TooOld, b.TryOpen(records[1], out _));  // 64 behind: outside a 64-wide window
            Assert.Equal(OpenResult.Opened, b.TryOpen(records[2], out _));  // 63 behind: its oldest slot
            Assert.Equal(OpenResult.TooOld, b.TryOpen(records[0], out _));
            Assert.Equal(2, b.Counters.RejectedTooOld);
        }
    }

    [Fact]
    public void TryOpen_AnySingleBitFlipped_IsRefusedAndNothingIsDelivered()
    {
        var (a, b) = HandshakeDriver.Establish();
        using (a) using (b)
        {
            var record = a.Seal("the prompt"u8);
            for (int bit = 0; bit < record.Length * 8; bit++)
            {
                var tampered = (byte[])record.Clone();
                tampered[bit / 8] ^= (byte)(1 << (bit % 8));
                var result = b.TryOpen(tampered, out var p);
                Assert.NotEqual(OpenResult.Opened, result);
                Assert.Empty(p);
            }
            Assert.Equal(record.Length * 8, b.Counters.Rejected);
            Assert.Equal(8, b.Counters.RejectedMalformed);        // the kind byte
            Assert.Equal(26, b.Counters.RejectedUnknownEpoch);    // epoch bits 6..31: more than 32 epochs ahead
            Assert.Equal(record.Length * 8 - 34, b.Counters.RejectedUnauthenticated); // the rest fail the tag
            Assert.Equal(OpenResult.Opened, b.TryOpen(record, out var original)); // the forgeries did not burn the counter
            Assert.Equal("the prompt"u8.ToArray(), original);
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(SecureChannel.Overhead - 1)]
    public void TryOpen_TooShortOrWrongKind_IsMalformed(int length)
    {
        var (a, b) = HandshakeDriver.Establish();
        using (a) using (b)
        {
            Assert.Equal(OpenResult.Malformed, b.TryOpen(new byte[length], out _));
            var record = a.Seal(Payload(1));
            record[0] = 0x02;
            Assert.Equal(OpenResult.Malformed, b.TryOpen(record, out _));
            Assert.Equal(2, b.Counters.RejectedMalformed);
        }
    }

    [Fact]
    public void Rekey_AtTheMessageBudget_ReceiverFollowsAcrossReorderAndLoss()
    {
        var (a, b) = HandshakeDriver.Establish(new RecordCipherOptions { RekeyAfterMessages = 4 });
        using (a) using (b)
        {
            var records = Enumerable.Range(0, 12).Select(i => a.Seal(Payload(i))).ToArray();
            Assert.Equal([0u, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2], records.Select(EpochOf));
            Assert.Equal(Enumerable.Range(0, 12).Select(i => (ulong)i), records.Select(CounterOf)); // counters never restart
            Assert.Equal(2, a.Counters.SendRekeys);

            // Epoch 1 arrives before the end of epoch 0; epoch 2's first record is lost; the rest straggle in.
            foreach (int i in new[] { 0, 1, 4, 2, 5, 3, 9, 6, 10, 7, 11 })
            {
                Assert.Equal(OpenResult.Opened, b.TryOpen(records[i], out var p));
                Assert.Equal(Payload(i), p);
            }
            Assert.Equal(2u, b.ReceiveEpoch);
            Assert.Equal(2, b.Counters.ReceiveRekeys);
            Assert.Equal(OpenResult.Opened, b.TryOpen(records[8], out var late)); // the "lost" first record of epoch 2, late
            Assert.Equal(Payload(8), late);
            Assert.Equal(0, b.Counters.Rejected);
        }
    }

    [Fact]
    public void Rekey_RecordTwoEpochsBehind_IsRefusedAsUnknownEpoch()
    {
        var (a, b) = HandshakeDriver.Establish(new RecordCipherOptions { RekeyAfterMessages = 2 });
        using (a) using (b)
        {
            var records = Enumerable.Range(0, 6).Select(i => a.Seal(Payload(i))).ToArray(); // epochs 0,0,1,1,2,2
            Assert.Equal(OpenResult.Opened, b.TryOpen(records[5], out _));
            Assert.Equal(OpenResult.Opened, b.TryOpen(records[2], out _)); // previous epoch: still kept
            Assert.Equal(OpenResult.UnknownEpoch, b.TryOpen(records[0], out _)); // key destroyed
            Assert.Equal(1, b.Counters.RejectedUnknownEpoch);
        }
    }

    [Fact]
    public void Rekey_AfterTheTimeBudget_RotatesAtTheNextRecord()
    {
        var clock = new SteppedClock();
        var (a, b) = HandshakeDriver.Establish(new RecordCipherOptions { RekeyAfterTime = TimeSpan.FromMinutes(2), TimeProvider = clock });
        using (a) using (b)
        {
            Assert.Equal(0u, EpochOf(a.Seal(Payload(0)))); // the confirmation record went the other way
            clock.Advance(TimeSpan.FromMinutes(1));
            var stillOld = a.Seal(Payload(1));
            clock.Advance(TimeSpan.FromMinutes(1));
            var rotated = a.Seal(Payload(2));
            Assert.Equal(0u, EpochOf(stillOld));
            Assert.Equal(1u, EpochOf(rotated));
            Assert.Equal(OpenResult.Opened, b.TryOpen(rotated, out _));
            Assert.Equal(OpenResult.Opened, b.TryOpen(stillOld, out _));
        }
    }

    [Fact]
    public void TryOpen_ForgedFarFutureEpoch_IsRefusedWithoutMovingTheReceiver()
    {
        var (a, b) = HandshakeDriver.Establish(new RecordCipherOptions { MaxEpochsAhead = 4 });
        using (a) using (b)
        {
            var record = a.Seal(Payload(1));
            var far = (byte[])record.Clone();
            BinaryPrimitives.WriteUInt32LittleEndian(far.AsSpan(1), 5);
            Assert.Equal(OpenResult.UnknownEpoch, b.TryOpen(far, out _));
            var near = (byte[])record.Clone();
            BinaryPrimitives.WriteUInt32LittleEndian(near.AsSpan(1), 3);
            Assert.Equal(OpenResult.Unauthenticated, b.TryOpen(near, out _)); // header is authenticated
            Assert.Equal(0u, b.ReceiveEpoch);
            Assert.Equal(OpenResult.Opened, b.TryOpen(record, out _));
        }
    }

    [Fact]
    public void TryOpen_RecordOfAnotherSession_FailsAuthentication()
    {
        var (a, b) = HandshakeDriver.Establish();
        var (c, d) = HandshakeDriver.Establish();
        using (a) using (b) using (c) using (d)
        {
            Assert.Equal(OpenResult.Unauthenticated, b.TryOpen(c.Seal(Payload(1)), out _));
            Assert.Equal(OpenResult.Unauthenticated, b.TryOpen(b.Seal(Payload(1)), out _)); // a reflected record: other direction's key
        }
    }

    [Fact]
    public void Dispose_ThenSeal_ThrowsAndOpenRefuses()
    {
        var (a, b) = HandshakeDriver.Establish();
        var record = a.Seal(Payload(1));
        a.Dispose();
        b.Dispose();
        Assert.Throws<ObjectDisposedException>(() => a.Seal(Payload(2)));
        Assert.NotEqual(OpenResult.Opened, b.TryOpen(record, out _));
    }

    [Fact]
    public void RecordCipherOptions_Validate_ListsEveryProblem()
    {
        var errors = new RecordCipherOptions { RekeyAfterMessages = 0, ReplayWindow = 100, MaxEpochsAhead = 0 }.Validate();
        Assert.Equal(3, errors.Count);
    }
}
