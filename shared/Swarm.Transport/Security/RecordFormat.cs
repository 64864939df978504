using System.Buffers.Binary;

namespace Swarm.Transport.Security;

/// <summary>
/// The layout of a record, one protected message after the handshake (little-endian):
/// <c>kind 0x10 | epoch u32 | counter u64 | ChaCha20-Poly1305(key of epoch, nonce = counter, ad = these 13 header bytes, payload) with its 16-byte tag</c>.
/// </summary>
/// <remarks>
/// The counter is the Noise nonce sent explicitly (spec §11.4), so records may be lost or reordered. It runs on
/// across epochs and never repeats within a direction, so no (key, nonce) pair is ever reused. The epoch says how
/// many times the sender applied Noise's Rekey() to the key from Split(); the whole header is authenticated as
/// associated data, so altering it fails the tag.
/// </remarks>
internal static class RecordFormat
{
    /// <summary>The kind byte of a record (handshake frames use 0x01–0x03).</summary>
    public const byte Kind = 0x10;

    /// <summary>Header length: kind, epoch, counter.</summary>
    public const int HeaderSize = 1 + 4 + 8;

    /// <summary>Bytes a record adds to its payload.</summary>
    public const int Overhead = HeaderSize + NoiseCipherState.TagSize;

    /// <summary>The largest counter a sender uses (2^64-1 is Noise's reserved rekey nonce).</summary>
    public const ulong MaxCounter = ulong.MaxValue - 1;

    public static void WriteHeader(Span<byte> header, uint epoch, ulong counter)
    {
        header[0] = Kind;
        BinaryPrimitives.WriteUInt32LittleEndian(header[1..], epoch);
        BinaryPrimitives.WriteUInt64LittleEndian(header[5..], counter);
    }

    /// <summary>Reads a header; false when <paramref name="record"/> cannot be a record.</summary>
    public static bool TryReadHeader(ReadOnlySpan<byte> record, out uint epoch, out ulong counter)
    {
        epoch = 0;
        counter = 0;
        if (record.Length < Overhead || record[0] != Kind) return false;
        epoch = BinaryPrimitives.ReadUInt32LittleEndian(record[1..]);
        counter = BinaryPrimitives.ReadUInt64LittleEndian(record[5..]);
        return counter <= MaxCounter;
    }
}
