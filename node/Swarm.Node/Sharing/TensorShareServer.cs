using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;
using Swarm.Protocol;
using Swarm.Transport;
using Swarm.Weights;

namespace Swarm.Node.Sharing;

/// <summary>
/// Serves the tensors this node fetched and verified to other nodes (<see cref="TensorRequest"/> →
/// <see cref="TensorChunk"/>), straight from its weight cache's blobs, one chunk of at most
/// <see cref="ProtocolInfo.MaxTensorChunkBytes"/> per request, within an upload rate limit. Only digests registered
/// with <see cref="Share"/> are served (never other files of the cache); a node started with <c>--no-share</c>
/// answers every request with <see cref="ErrorCode.Unauthorized"/>. The asker verifies what it receives.
/// </summary>
internal sealed class TensorShareServer
{
    /// <summary>Longest a request may wait for upload budget before it is refused as overloaded (2 s).</summary>
    public static readonly TimeSpan MaxWait = TimeSpan.FromSeconds(2);

    private readonly WeightCache _cache;
    private readonly UploadRateLimiter? _limiter;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, long> _shared = new(StringComparer.Ordinal); // digest → length
    private long _chunksServed, _bytesServed;

    /// <param name="cache">Where the blobs are.</param>
    /// <param name="limiter">The upload budget; null when the node does not share (<c>--no-share</c>).</param>
    public TensorShareServer(WeightCache cache, UploadRateLimiter? limiter, ILogger logger)
    {
        _cache = cache; _limiter = limiter; _logger = logger;
    }

    /// <summary>False for a node started with <c>--no-share</c>.</summary>
    public bool Enabled => _limiter is not null;

    /// <summary>Chunks sent to peers so far.</summary>
    public long ChunksServed => Interlocked.Read(ref _chunksServed);

    /// <summary>Tensor bytes sent to peers so far.</summary>
    public long BytesServed => Interlocked.Read(ref _bytesServed);

    /// <summary>Offers tensors this node fetched and verified (their blobs are in the cache) to peers.</summary>
    public void Share(IEnumerable<TensorDigest> tensors)
    {
        foreach (var t in tensors) _shared[t.Sha256] = t.Length;
    }

    /// <summary>Answers one request in the background (the reply goes to the asking peer).</summary>
    public void Handle(IPeer peer, Envelope request, TensorRequest body, CancellationToken ct) => _ = AnswerAsync(peer, request, body, ct);

    private async Task AnswerAsync(IPeer peer, Envelope request, TensorRequest body, CancellationToken ct)
    {
        IMessage reply;
        try { reply = await ChunkAsync(body, ct).ConfigureAwait(false); }
        catch (OperationCanceledException) { return; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _logger.ShareFailed(body.Sha256[..16], e.Message);
            reply = new ErrorReply { Code = ErrorCode.RangeNotLoaded, Message = "this node cannot read that tensor now" };
        }
        try { peer.Send(request.CreateReply(reply)); }
        catch (PeerDisconnectedException) { } // the asker went away; it tries elsewhere
    }

    /// <summary>The reply to a request: a chunk, or why not.</summary>
    internal async Task<IMessage> ChunkAsync(TensorRequest body, CancellationToken ct)
    {
        if (_limiter is null) return new ErrorReply { Code = ErrorCode.Unauthorized, Message = "this node does not share weights (--no-share, or it serves a local --model folder)" };
        if (!_shared.TryGetValue(body.Sha256, out long length) || !_cache.HasBlob(body.Sha256, length))
            return new ErrorReply { Code = ErrorCode.RangeNotLoaded, Message = $"this node does not hold tensor {body.Sha256[..16]}…" };
        if (body.Offset >= length && length > 0)
            return new ErrorReply { Code = ErrorCode.BadRequest, Message = $"offset {body.Offset} is past the tensor's {length} bytes" };
        int count = (int)Math.Min(body.Length, length - body.Offset);
        if (_limiter.TryReserve(count, MaxWait) is not { } wait)
            return new ErrorReply { Code = ErrorCode.Overloaded, Message = $"upload rate limit ({_limiter.BytesPerSecond / 1e6:F1} MB/s) in use; ask elsewhere" };
        if (wait > TimeSpan.Zero) await Task.Delay(wait, ct).ConfigureAwait(false);
        var data = new byte[count];
        using (SafeFileHandle file = File.OpenHandle(_cache.BlobPath(body.Sha256), FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.Asynchronous))
        {
            int filled = 0;
            while (filled < count)
            {
                int n = await RandomAccess.ReadAsync(file, data.AsMemory(filled), body.Offset + filled, ct).ConfigureAwait(false);
                if (n == 0) throw new IOException($"blob {body.Sha256[..16]}… ended early");
                filled += n;
            }
        }
        Interlocked.Increment(ref _chunksServed);
        Interlocked.Add(ref _bytesServed, count);
        return new TensorChunk { Sha256 = body.Sha256, Offset = body.Offset, TotalLength = length, Data = data };
    }
}
