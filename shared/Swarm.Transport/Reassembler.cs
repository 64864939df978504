using System.Buffers.Binary;

namespace Swarm.Transport;

/// <summary>Outcome of feeding one frame to the <see cref="Reassembler"/>.</summary>
internal enum FrameResult
{
    /// <summary>A chunk was stored; the message is not complete yet.</summary>
    Partial,
    /// <summary>A message is complete (its bytes are reserved in the budget until <see cref="Reassembler.Release"/>).</summary>
    Complete,
    /// <summary>The frame was ignored because its transfer was dropped earlier.</summary>
    Ignored,
    /// <summary>The frame is malformed (error says why).</summary>
    Malformed,
    /// <summary>The message was dropped to stay within the memory budget or size limit (error says why).</summary>
    Dropped,
}

/// <summary>
/// Reassembles chunked messages under a memory budget. Thread-safe (one lock; fed by LiteNetLib's receive thread,
/// swept and released by the poll thread). Memory counted: every partial message's full buffer plus every complete
/// message not yet <see cref="Release"/>d.
/// </summary>
internal sealed class Reassembler
{
    private sealed class Partial
    {
        public required byte[] Buffer;
        public required bool[] Have;
        public required int Count;
        public required int ChunkSize;
        public int Received;
        public long LastProgressMs;
    }

    private readonly object _lock = new();
    private readonly Dictionary<(object Peer, uint Transfer), Partial> _partials = new();
    private readonly Dictionary<(object Peer, uint Transfer), long> _dropped = new();
    private readonly long _budget;
    private readonly int _maxMessageBytes;
    private readonly long _timeoutMs;
    private readonly Func<long> _nowMs;
    private long _pending;

    public Reassembler(long budget, int maxMessageBytes, TimeSpan timeout, Func<long>? nowMs = null)
    {
        _budget = budget;
        _maxMessageBytes = maxMessageBytes;
        _timeoutMs = (long)timeout.TotalMilliseconds;
        _nowMs = nowMs ?? (() => Environment.TickCount64);
    }

    /// <summary>Bytes currently held (partial buffers plus unreleased complete messages).</summary>
    public long PendingBytes { get { lock (_lock) return _pending; } }

    /// <summary>Number of partial messages.</summary>
    public int PartialCount { get { lock (_lock) return _partials.Count; } }

    public FrameResult Accept(object peer, ReadOnlySpan<byte> frame, out byte[]? message, out string? error)
    {
        message = null;
        error = null;
        if (frame.Length == 0) { error = "empty frame"; return FrameResult.Malformed; }
        if (frame[0] == Framing.Single)
        {
            var payload = frame[1..];
            lock (_lock)
            {
                if (_pending + payload.Length > _budget)
                {
                    error = $"message of {payload.Length} bytes dropped: {_pending} bytes of inbound messages pending, budget {_budget}";
                    return FrameResult.Dropped;
                }
                _pending += payload.Length;
            }
            message = payload.ToArray();
            return FrameResult.Complete;
        }
        if (frame[0] != Framing.Chunk) { error = $"unknown frame type 0x{frame[0]:X2}"; return FrameResult.Malformed; }
        if (frame.Length < Framing.ChunkHeaderSize) { error = $"chunk frame of {frame.Length} bytes is shorter than its header"; return FrameResult.Malformed; }

        uint transfer = BinaryPrimitives.ReadUInt32LittleEndian(frame[1..]);
        int index = BinaryPrimitives.ReadInt32LittleEndian(frame[5..]);
        int count = BinaryPrimitives.ReadInt32LittleEndian(frame[9..]);
        int total = BinaryPrimitives.ReadInt32LittleEndian(frame[13..]);
        int chunkSize = BinaryPrimitives.ReadInt32LittleEndian(frame[17..]);
        var data = frame[Framing.ChunkHeaderSize..];

        if (total <= 0 || chunkSize <= 0 || count <= 0 || count != (int)((total + (long)chunkSize - 1) / chunkSize))
        { error = $"chunk header inconsistent (total {total}, chunk size {chunkSize}, count {count})"; return FrameResult.Malformed; }
        if (index < 0 || index >= count) { error = $"chunk index {index} outside 0..{count - 1}"; return FrameResult.Malformed; }
        int expected = index < count - 1 ? chunkSize : total - chunkSize * (count - 1);
        if (data.Length != expected) { error = $"chunk {index} carries {data.Length} bytes, expected {expected}"; return FrameResult.Malformed; }

        var key = (peer, transfer);
        lock (_lock)
        {
            if (_dropped.ContainsKey(key)) return FrameResult.Ignored;
            if (!_partials.TryGetValue(key, out var p))
            {
                if (total > _maxMessageBytes)
                {
                    _dropped[key] = _nowMs();
                    error = $"message of {total} bytes exceeds the limit of {_maxMessageBytes}";
                    return FrameResult.Dropped;
                }
                if (_pending + total > _budget)
                {
                    _dropped[key] = _nowMs();
                    error = $"message of {total} bytes dropped: {_pending} bytes of inbound messages pending, budget {_budget}";
                    return FrameResult.Dropped;
                }
                p = new Partial { Buffer = GC.AllocateUninitializedArray<byte>(total), Have = new bool[count], Count = count, ChunkSize = chunkSize };
                _pending += total;
                _partials[key] = p;
            }
            else if (p.Count != count || p.Buffer.Length != total || p.ChunkSize != chunkSize)
            {
                error = $"chunk {index} of transfer {transfer} disagrees with earlier chunks (total {total} vs {p.Buffer.Length})";
                return FrameResult.Malformed;
            }
            if (p.Have[index]) { error = $"duplicate chunk {index} of transfer {transfer}"; return FrameResult.Malformed; }
            data.CopyTo(p.Buffer.AsSpan(index * chunkSize));
            p.Have[index] = true;
            p.Received++;
            p.LastProgressMs = _nowMs();
            if (p.Received < p.Count) return FrameResult.Partial;
            _partials.Remove(key);
            message = p.Buffer;
            return FrameResult.Complete;
        }
    }

    /// <summary>Returns a complete message's bytes to the budget once it has been decoded (or dropped).</summary>
    public void Release(int bytes)
    {
        lock (_lock) _pending -= bytes;
    }

    /// <summary>Drops partial messages that made no progress within the timeout; forgets old drop marks.</summary>
    /// <returns>One description per dropped message.</returns>
    public List<string> Sweep()
    {
        var dropped = new List<string>();
        long now = _nowMs();
        lock (_lock)
        {
            foreach (var (key, p) in _partials.ToList())
            {
                if (now - p.LastProgressMs < _timeoutMs) continue;
                _partials.Remove(key);
                _pending -= p.Buffer.Length;
                _dropped[key] = now;
                dropped.Add($"transfer {key.Transfer}: {p.Received} of {p.Count} chunks ({p.Buffer.Length} bytes) after {now - p.LastProgressMs} ms without progress");
            }
            foreach (var (key, at) in _dropped.ToList())
                if (now - at > 2 * _timeoutMs) _dropped.Remove(key);
        }
        return dropped;
    }

    /// <summary>Forgets everything of a peer that went away.</summary>
    public void RemovePeer(object peer)
    {
        lock (_lock)
        {
            foreach (var (key, p) in _partials.ToList())
            {
                if (!ReferenceEquals(key.Peer, peer)) continue;
                _partials.Remove(key);
                _pending -= p.Buffer.Length;
            }
            foreach (var key in _dropped.Keys.Where(k => ReferenceEquals(k.Peer, peer)).ToList()) _dropped.Remove(key);
        }
    }
}
