namespace Swarm.Transport.Security;

/// <summary>The outcome of opening a record; everything but <see cref="Opened"/> means it was dropped.</summary>
internal enum OpenResult
{
    /// <summary>Authenticated and decrypted.</summary>
    Opened,
    /// <summary>Not a record: too short, wrong kind byte, or a reserved counter.</summary>
    Malformed,
    /// <summary>Its counter was received before.</summary>
    Replayed,
    /// <summary>Its counter is behind the replay window.</summary>
    TooOld,
    /// <summary>Its key epoch was retired already, or is further ahead than a receiver derives keys for.</summary>
    UnknownEpoch,
    /// <summary>The AEAD tag did not verify: altered, forged, or sealed under another key.</summary>
    Unauthenticated,
}

/// <summary>
/// The receiving direction of the record layer: refuses malformed, replayed, too old and unauthenticated records
/// (counting each) and follows the sender's key epochs. Never throws for anything a peer sends. Thread-safe.
/// </summary>
/// <remarks>
/// Keys of the current and the previous epoch are kept, so records reordered across a rotation still open; keys
/// of later epochs are derived on demand (at most <see cref="RecordCipherOptions.MaxEpochsAhead"/>) and adopted
/// only once a record under them authenticated, so forged headers cannot move the receiver. Older keys are
/// destroyed when the receiver moves on.
/// </remarks>
internal sealed class RecordOpener : IDisposable
{
    private readonly Lock _lock = new();
    private readonly RecordCipherOptions _options;
    private readonly SecureChannelCounters _counters;
    private readonly ReplayWindow _window;
    private NoiseCipherState _current;
    private NoiseCipherState? _previous;
    private uint _epoch;
    private bool _disposed;

    /// <param name="cipher">The receiving cipher state from Split(); this opener takes ownership.</param>
    public RecordOpener(NoiseCipherState cipher, RecordCipherOptions options, SecureChannelCounters counters)
    {
        _current = cipher;
        _options = options;
        _counters = counters;
        _window = new ReplayWindow(options.ReplayWindow);
    }

    /// <summary>The newest key epoch a record authenticated under.</summary>
    public uint Epoch { get { lock (_lock) return _epoch; } }

    /// <summary>Authenticates and decrypts <paramref name="record"/>; <paramref name="payload"/> is empty unless the result is <see cref="OpenResult.Opened"/>.</summary>
    public OpenResult TryOpen(ReadOnlySpan<byte> record, out byte[] payload)
    {
        payload = [];
        OpenResult result;
        if (!RecordFormat.TryReadHeader(record, out uint epoch, out ulong counter))
            result = OpenResult.Malformed;
        else
        {
            var plaintext = new byte[record.Length - RecordFormat.Overhead];
            lock (_lock)
                result = _disposed ? OpenResult.UnknownEpoch : OpenLocked(record, epoch, counter, plaintext);
            if (result == OpenResult.Opened) payload = plaintext;
        }
        _counters.Count(result);
        return result;
    }

    /// <summary>Destroys every key held.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
            _current.Dispose();
            _previous?.Dispose();
        }
    }

    private OpenResult OpenLocked(ReadOnlySpan<byte> record, uint epoch, ulong counter, Span<byte> plaintext)
    {
        switch (_window.Check(counter))
        {
            case ReplayVerdict.Replayed: return OpenResult.Replayed;
            case ReplayVerdict.TooOld: return OpenResult.TooOld;
        }
        var header = record[..RecordFormat.HeaderSize];
        var ciphertext = record[RecordFormat.HeaderSize..];

        if (epoch <= _epoch)
        {
            var cipher = epoch == _epoch ? _current : epoch == _epoch - 1 ? _previous : null;
            if (cipher == null) return OpenResult.UnknownEpoch;
            if (!cipher.TryDecryptAt(counter, header, ciphertext, plaintext)) return OpenResult.Unauthenticated;
            _window.Mark(counter);
            return OpenResult.Opened;
        }

        uint ahead = epoch - _epoch;
        if (ahead > _options.MaxEpochsAhead) return OpenResult.UnknownEpoch;
        // Derive the keys of the epochs up to the record's, keeping the last two; adopt them only if it authenticates.
        NoiseCipherState? beforeTarget = null;
        var target = _current.CreateRekeyed();
        for (uint i = 1; i < ahead; i++)
        {
            beforeTarget?.Dispose();
            beforeTarget = target;
            target = target.CreateRekeyed();
        }
        if (!target.TryDecryptAt(counter, header, ciphertext, plaintext))
        {
            target.Dispose();
            beforeTarget?.Dispose();
            return OpenResult.Unauthenticated;
        }
        _previous?.Dispose();
        if (beforeTarget == null)
            _previous = _current;
        else
        {
            _current.Dispose();
            _previous = beforeTarget;
        }
        _current = target;
        _epoch = epoch;
        _counters.CountReceiveRekeys(ahead);
        _window.Mark(counter);
        return OpenResult.Opened;
    }
}
