namespace Swarm.Transport.Security;

/// <summary>
/// The sending direction of the record layer: numbers, encrypts and authenticates each payload
/// (<see cref="RecordFormat"/>), and moves to the next key epoch with Noise's Rekey() when the message or time
/// budget of the current one is spent. Thread-safe.
/// </summary>
/// <remarks>
/// Rotation is the sender's decision, announced by the epoch number in every header, so the receiver follows at
/// exactly the same record boundary even when records around it are lost or reordered. The old key is destroyed
/// at rotation (forward secrecy for everything sent under it).
/// </remarks>
internal sealed class RecordSealer : IDisposable
{
    private readonly Lock _lock = new();
    private readonly NoiseCipherState _cipher;
    private readonly RecordCipherOptions _options;
    private readonly SecureChannelCounters _counters;
    private uint _epoch;
    private ulong _nextCounter;
    private long _sealedInEpoch;
    private long _epochStarted;
    private bool _disposed;

    /// <param name="cipher">The sending cipher state from Split(); this sealer takes ownership.</param>
    public RecordSealer(NoiseCipherState cipher, RecordCipherOptions options, SecureChannelCounters counters)
    {
        _cipher = cipher;
        _options = options;
        _counters = counters;
        _epochStarted = options.TimeProvider.GetTimestamp();
    }

    /// <summary>The current key epoch.</summary>
    public uint Epoch { get { lock (_lock) return _epoch; } }

    /// <summary>The counter the next record will carry.</summary>
    public ulong NextCounter { get { lock (_lock) return _nextCounter; } }

    /// <summary>A record carrying <paramref name="payload"/>.</summary>
    public byte[] Seal(ReadOnlySpan<byte> payload)
    {
        var record = new byte[payload.Length + RecordFormat.Overhead];
        Seal(payload, record);
        return record;
    }

    /// <summary>Writes a record carrying <paramref name="payload"/> into <paramref name="record"/> (payload length + <see cref="RecordFormat.Overhead"/> bytes).</summary>
    /// <exception cref="InvalidOperationException">The channel is disposed or has used up its 2^64-1 counters.</exception>
    public void Seal(ReadOnlySpan<byte> payload, Span<byte> record)
    {
        if (record.Length != payload.Length + RecordFormat.Overhead)
            throw new ArgumentException($"A record of a {payload.Length}-byte payload is {payload.Length + RecordFormat.Overhead} bytes.", nameof(record));
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_nextCounter > RecordFormat.MaxCounter)
                throw new InvalidOperationException("The channel has used every counter; a new handshake is needed.");
            if (RotationDue()) Rotate();
            ulong counter = _nextCounter++;
            var header = record[..RecordFormat.HeaderSize];
            RecordFormat.WriteHeader(header, _epoch, counter);
            _cipher.EncryptAt(counter, header, payload, record[RecordFormat.HeaderSize..]);
            _sealedInEpoch++;
        }
        _counters.CountSealed();
    }

    /// <summary>Destroys the key.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
            _cipher.Dispose();
        }
    }

    private bool RotationDue() =>
        _sealedInEpoch >= _options.RekeyAfterMessages
        || (_sealedInEpoch > 0 && _options.TimeProvider.GetElapsedTime(_epochStarted) >= _options.RekeyAfterTime);

    private void Rotate()
    {
        if (_epoch == uint.MaxValue) throw new InvalidOperationException("The channel has used every key epoch; a new handshake is needed.");
        _cipher.Rekey();
        _epoch++;
        _sealedInEpoch = 0;
        _epochStarted = _options.TimeProvider.GetTimestamp();
        _counters.CountSendRekey();
    }
}
