using System.Net;
using Swarm.Protocol;
using Swarm.Transport;
using Swarm.Weights;

namespace Swarm.Node.Sharing;

/// <summary>
/// Another node of the swarm as a source of tensors: asks it over the swarm transport for each tensor by its manifest
/// digest, one chunk (at most <see cref="ProtocolInfo.MaxTensorChunkBytes"/>) at a time. A peer that cannot be reached or
/// does not share is not asked again; one that does not hold a tensor yet, is over its rate limit or is slow fails
/// that tensor transiently (the fetcher asks it once more after the other sources). The bytes are checked against the
/// manifest by the fetcher, like every source's.
/// </summary>
internal sealed class PeerTensorSource : ITensorSource
{
    /// <summary>How long one chunk may take (covers the peer's rate-limit wait and the transfer): 30 s.</summary>
    public static readonly TimeSpan ChunkTimeout = TimeSpan.FromSeconds(30);

    private readonly ITransport _transport;
    private readonly IPEndPoint _peer;
    private readonly IReadOnlyDictionary<string, string> _digests;
    private readonly int _chunkBytes;
    private volatile string? _givenUp;

    /// <param name="digests">The manifest digest of each tensor that may be asked for, by name.</param>
    /// <param name="chunkBytes">Bytes asked for per request; default (and at most) <see cref="ProtocolInfo.MaxTensorChunkBytes"/>.</param>
    public PeerTensorSource(ITransport transport, IPEndPoint peer, IReadOnlyDictionary<string, string> digests,
        int chunkBytes = ProtocolInfo.MaxTensorChunkBytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkBytes, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(chunkBytes, ProtocolInfo.MaxTensorChunkBytes);
        _transport = transport; _peer = peer; _digests = digests; _chunkBytes = chunkBytes;
    }

    /// <inheritdoc />
    public string Name => $"peer {_peer}";

    /// <inheritdoc />
    public async Task CopyAsync(RemoteTensor tensor, long offset, Stream destination, Action<int> onBytes, CancellationToken ct)
    {
        if (!_digests.TryGetValue(tensor.Name, out var sha)) throw new WeightFetchException("no manifest digest to ask a peer by");
        if (_givenUp is { } why) throw new WeightFetchException(why);
        IPeer peer;
        try { peer = await _transport.ConnectAsync(_peer, ct).ConfigureAwait(false); }
        catch (PeerDisconnectedException e) { throw GiveUp($"unreachable ({e.Message})"); }
        for (long position = offset; position < tensor.Length;)
        {
            int want = (int)Math.Min(_chunkBytes, tensor.Length - position);
            var request = new TensorRequest { Sha256 = sha, Offset = position, Length = want };
            Envelope reply;
            try { reply = await peer.RequestAsync(Envelope.Create(request), ChunkTimeout, ct).ConfigureAwait(false); }
            catch (TimeoutException) { throw new WeightFetchException($"no chunk within {ChunkTimeout.TotalSeconds:F0} s", transient: true); }
            catch (PeerDisconnectedException e) { throw GiveUp($"disconnected ({e.Message})"); }
            switch (reply.Body)
            {
                case TensorChunk c when c.Sha256 == sha && c.Offset == position && c.TotalLength == tensor.Length && c.Data.Length is > 0 && c.Data.Length <= want:
                    await destination.WriteAsync(c.Data, ct).ConfigureAwait(false);
                    onBytes(c.Data.Length);
                    position += c.Data.Length;
                    break;
                case TensorChunk c:
                    throw new WeightFetchException($"sent a chunk that does not fit (bytes {c.Offset}+{c.Data.Length} of {c.TotalLength} where " +
                                                   $"{want} bytes at {position} of {tensor.Length} were asked for)");
                case ErrorReply { Code: ErrorCode.Unauthorized } e:
                    throw GiveUp(e.Message);
                case ErrorReply e:
                    throw new WeightFetchException(e.Message, transient: e.Code is ErrorCode.RangeNotLoaded or ErrorCode.Overloaded);
                default:
                    throw new WeightFetchException($"answered {reply.Body.GetType().Name} to a tensor request");
            }
        }
    }

    /// <summary>Remembers that this peer is of no use for the rest of the pull (unreachable, not sharing).</summary>
    private WeightFetchException GiveUp(string why)
    {
        _givenUp = why;
        return new WeightFetchException(why);
    }
}
