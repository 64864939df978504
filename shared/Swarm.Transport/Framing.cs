using System.Buffers;
using System.Buffers.Binary;
using LiteNetLib;

namespace Swarm.Transport;

/// <summary>
/// Transport frames inside LiteNetLib packets (little-endian):
/// <list type="bullet">
/// <item><c>0x01 | payload</c> — a whole message that fits one packet (sent ReliableOrdered on channel 0).</item>
/// <item><c>0x02 | transfer u32 | index u32 | count u32 | total u32 | chunkSize u32 | data</c> — chunk <c>index</c> of
/// <c>count</c> of a message of <c>total</c> bytes; every chunk but the last carries exactly <c>chunkSize</c> bytes.
/// Chunks go ReliableUnordered, spread round-robin over the channels, and are reassembled by (sender, transfer, index).</item>
/// <item><c>0x03 | handshake frame</c> — a Noise handshake frame (<c>SecureHandshake</c>), sent ReliableOrdered on channel 0
/// like single messages, so a peer sees the handshake's last frame before the first record that follows it there.</item>
/// </list>
/// With encryption on, the payload of a message (single or chunked) is one record of the secure channel: a message is
/// sealed whole, then cut into chunks, and opened once reassembled.
/// </summary>
internal static class Framing
{
    public const byte Single = 0x01;
    public const byte Chunk = 0x02;
    public const byte Handshake = 0x03;
    public const int ChunkHeaderSize = 1 + 5 * 4;

    /// <summary>Largest handshake frame accepted (Noise XX messages are under 100 bytes; refusals under 1 KB).</summary>
    public const int MaxHandshakeFrame = 1024;

    public static void WriteChunkHeader(Span<byte> dst, uint transfer, int index, int count, int total, int chunkSize)
    {
        dst[0] = Chunk;
        BinaryPrimitives.WriteUInt32LittleEndian(dst[1..], transfer);
        BinaryPrimitives.WriteInt32LittleEndian(dst[5..], index);
        BinaryPrimitives.WriteInt32LittleEndian(dst[9..], count);
        BinaryPrimitives.WriteInt32LittleEndian(dst[13..], total);
        BinaryPrimitives.WriteInt32LittleEndian(dst[17..], chunkSize);
    }

    /// <summary>Sends a handshake frame to <paramref name="peer"/> now (not at LiteNetLib's next tick: a handshake is three frames in a row).</summary>
    public static void SendHandshake(TransportPeer peer, ReadOnlySpan<byte> frame)
    {
        var packet = new byte[frame.Length + 1];
        packet[0] = Handshake;
        frame.CopyTo(packet.AsSpan(1));
        peer.Net.Send(packet, 0, DeliveryMethod.ReliableOrdered);
        peer.Flush();
    }

    /// <summary>
    /// Frames and queues a message payload to <paramref name="peer"/>: one ReliableOrdered packet on channel 0 when it
    /// fits, else chunks spread round-robin over <paramref name="channels"/> ReliableUnordered channels. LiteNetLib
    /// copies the bytes before this returns.
    /// </summary>
    public static void SendMessage(TransportPeer peer, ReadOnlySpan<byte> payload, int channels)
    {
        var net = peer.Net;
        int maxPacket = net.GetMaxSinglePacketSize(DeliveryMethod.ReliableUnordered);
        var buffer = ArrayPool<byte>.Shared.Rent(maxPacket);
        try
        {
            if (payload.Length + 1 <= maxPacket)
            {
                buffer[0] = Single;
                payload.CopyTo(buffer.AsSpan(1));
                net.Send(buffer.AsSpan(0, payload.Length + 1), 0, DeliveryMethod.ReliableOrdered);
                return;
            }
            int chunkSize = maxPacket - ChunkHeaderSize;
            int count = (payload.Length + chunkSize - 1) / chunkSize;
            uint transfer = peer.NextTransfer();
            int first = peer.NextChannelOffset(count);
            for (int i = 0; i < count; i++)
            {
                int offset = i * chunkSize;
                int len = Math.Min(chunkSize, payload.Length - offset);
                WriteChunkHeader(buffer, transfer, i, count, payload.Length, chunkSize);
                payload.Slice(offset, len).CopyTo(buffer.AsSpan(ChunkHeaderSize));
                net.Send(buffer.AsSpan(0, ChunkHeaderSize + len), (byte)((first + i) % channels), DeliveryMethod.ReliableUnordered);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
