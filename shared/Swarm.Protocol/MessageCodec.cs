using System.Diagnostics.CodeAnalysis;
using MessagePack;
using MessagePack.Resolvers;

namespace Swarm.Protocol;

/// <summary>
/// Serializes <see cref="Envelope"/>s to MessagePack and back. Deserialization treats input as untrusted
/// (<see cref="MessagePackSecurity.UntrustedData"/>, a size limit, full validation) and never throws:
/// malformed, truncated, oversized, wrong-version or unknown-kind input yields false and an error string.
/// Thread-safe.
/// </summary>
public sealed class MessageCodec
{
    private static readonly MessagePackSerializerOptions s_options = MessagePackSerializerOptions.Standard
        .WithResolver(StandardResolver.Instance)
        .WithSecurity(MessagePackSecurity.UntrustedData);

    /// <summary>A codec with <see cref="ProtocolInfo.DefaultMaxMessageBytes"/>.</summary>
    public static MessageCodec Default { get; } = new();

    /// <summary>Creates a codec that accepts envelopes of at most <paramref name="maxMessageBytes"/> bytes.</summary>
    public MessageCodec(int maxMessageBytes = ProtocolInfo.DefaultMaxMessageBytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxMessageBytes, 16);
        MaxMessageBytes = maxMessageBytes;
    }

    /// <summary>Largest serialized envelope accepted or produced.</summary>
    public int MaxMessageBytes { get; }

    /// <summary>Serializes a valid envelope.</summary>
    /// <exception cref="ArgumentException">The envelope fails <see cref="MessageValidator"/> or serializes to more than <see cref="MaxMessageBytes"/>.</exception>
    public byte[] Serialize(Envelope envelope)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        if (MessageValidator.Validate(envelope) is { } error)
            throw new ArgumentException($"invalid envelope: {error}", nameof(envelope));
        var bytes = MessagePackSerializer.Serialize(envelope, s_options);
        if (bytes.Length > MaxMessageBytes)
            throw new ArgumentException($"{envelope.Body.GetType().Name} serializes to {bytes.Length} bytes, over the limit of {MaxMessageBytes}", nameof(envelope));
        return bytes;
    }

    /// <summary>Decodes and validates one envelope. Never throws.</summary>
    /// <returns>True with <paramref name="envelope"/> set, or false with <paramref name="error"/> saying why.</returns>
    public bool TryDeserialize(ReadOnlyMemory<byte> bytes, [NotNullWhen(true)] out Envelope? envelope, [NotNullWhen(false)] out string? error)
    {
        envelope = null;
        if (bytes.Length == 0) { error = "empty message"; return false; }
        if (bytes.Length > MaxMessageBytes) { error = $"message of {bytes.Length} bytes exceeds the limit of {MaxMessageBytes}"; return false; }

        if (!TryPeekVersion(bytes, out int version, out error)) return false;
        if (version != ProtocolInfo.Version)
        {
            error = $"protocol version {version} is not supported (this peer speaks {ProtocolInfo.Version})";
            return false;
        }

        Envelope decoded;
        try
        {
            decoded = MessagePackSerializer.Deserialize<Envelope>(bytes, s_options, out int read);
            if (read != bytes.Length) { error = $"{bytes.Length - read} trailing bytes after the envelope"; return false; }
        }
        catch (Exception ex) when (ex is MessagePackSerializationException or EndOfStreamException or InvalidOperationException or OverflowException or ArgumentException or InsufficientExecutionStackException)
        {
            error = $"malformed message: {Innermost(ex).Message}";
            return false;
        }

        if (decoded is null) { error = "message is nil"; return false; }
        if (decoded.Body is null)
        {
            error = TryPeekUnionKey(bytes, out int key) ? $"unknown message kind {key}" : "envelope has no body";
            return false;
        }
        if (MessageValidator.Validate(decoded) is { } invalid) { error = $"invalid message: {invalid}"; return false; }
        envelope = decoded;
        error = null;
        return true;
    }

    private static bool TryPeekVersion(ReadOnlyMemory<byte> bytes, out int version, [NotNullWhen(false)] out string? error)
    {
        version = 0;
        try
        {
            var reader = new MessagePackReader(bytes);
            if (reader.NextMessagePackType != MessagePackType.Array) { error = $"malformed message: expected an envelope array, found {reader.NextMessagePackType}"; return false; }
            int count = reader.ReadArrayHeader();
            if (count < 7) { error = $"malformed message: envelope has {count} fields, expected at least 7"; return false; }
            if (reader.NextMessagePackType != MessagePackType.Integer) { error = "malformed message: envelope version is not an integer"; return false; }
            version = reader.ReadInt32();
            error = null;
            return true;
        }
        catch (Exception ex) when (ex is MessagePackSerializationException or EndOfStreamException or OverflowException)
        {
            error = $"malformed message: {ex.Message}";
            return false;
        }
    }

    private static bool TryPeekUnionKey(ReadOnlyMemory<byte> bytes, out int key)
    {
        key = 0;
        try
        {
            var reader = new MessagePackReader(bytes);
            reader.ReadArrayHeader();
            for (int i = 0; i < 6; i++) reader.Skip();
            if (reader.NextMessagePackType != MessagePackType.Array) return false;
            if (reader.ReadArrayHeader() != 2 || reader.NextMessagePackType != MessagePackType.Integer) return false;
            key = reader.ReadInt32();
            return true;
        }
        catch (Exception ex) when (ex is MessagePackSerializationException or EndOfStreamException or OverflowException)
        {
            return false;
        }
    }

    private static Exception Innermost(Exception ex)
    {
        while (ex.InnerException is not null) ex = ex.InnerException;
        return ex;
    }
}
