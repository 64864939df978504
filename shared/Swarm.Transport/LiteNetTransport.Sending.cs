using System.Buffers;
using LiteNetLib;
using Swarm.Protocol;

namespace Swarm.Transport;

/// <summary>Sending: envelopes, chunked payloads and request/response with timeouts.</summary>
public sealed partial class LiteNetTransport
{
    // ---- sending ------------------------------------------------------------------------------

    private long NextMessageId() => Interlocked.Increment(ref _nextMessageId);

    private long Send(PeerState peer, Envelope envelope)
    {
        if (!peer.IsConnected)
            throw new PeerDisconnectedException($"peer {peer.RemoteEndPoint} is not connected ({peer.DisconnectReason ?? "still connecting"})");
        if (envelope.MessageId == 0) envelope = envelope with { MessageId = NextMessageId() };
        var bytes = _codec.Serialize(envelope);
        SendPayload(peer, bytes);
        Interlocked.Increment(ref _counters._messagesSent);
        Interlocked.Add(ref _counters._bytesSent, bytes.Length);
        return envelope.MessageId;
    }

    /// <summary>Frames and queues raw payload bytes (no codec) — the tests use it to inject malformed messages.</summary>
    internal void SendPayload(PeerState peer, ReadOnlySpan<byte> payload)
    {
        var net = peer.Net;
        int maxPacket = net.GetMaxSinglePacketSize(DeliveryMethod.ReliableUnordered);
        var buffer = ArrayPool<byte>.Shared.Rent(maxPacket);
        try
        {
            if (payload.Length + 1 <= maxPacket)
            {
                buffer[0] = Framing.Single;
                payload.CopyTo(buffer.AsSpan(1));
                net.Send(buffer.AsSpan(0, payload.Length + 1), 0, DeliveryMethod.ReliableOrdered);
            }
            else
            {
                int chunkSize = maxPacket - Framing.ChunkHeaderSize;
                int count = (payload.Length + chunkSize - 1) / chunkSize;
                uint transfer = peer.NextTransfer();
                int channels = _options.Channels;
                int first = peer.NextChannelOffset(count);
                for (int i = 0; i < count; i++)
                {
                    int offset = i * chunkSize;
                    int len = Math.Min(chunkSize, payload.Length - offset);
                    Framing.WriteChunkHeader(buffer, transfer, i, count, payload.Length, chunkSize);
                    payload.Slice(offset, len).CopyTo(buffer.AsSpan(Framing.ChunkHeaderSize));
                    net.Send(buffer.AsSpan(0, Framing.ChunkHeaderSize + len), (byte)((first + i) % channels), DeliveryMethod.ReliableUnordered);
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        _manager.TriggerUpdate();
    }

    private async Task<Envelope> RequestAsync(PeerState peer, Envelope request, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(timeout, TimeSpan.Zero);
        if (request.MessageId == 0) request = request with { MessageId = NextMessageId() };
        long id = request.MessageId;
        string what = $"{request.Body.GetType().Name} #{id} to {peer.RemoteEndPoint}";
        var tcs = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!peer.Pending.TryAdd(id, tcs)) throw new ArgumentException($"message id {id} is already awaiting a reply", nameof(request));
        using var timeoutCts = new CancellationTokenSource(timeout);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeoutCts.Token, cancellationToken);
        using var reg = linked.Token.Register(() =>
        {
            if (!peer.Pending.TryRemove(id, out _)) return;
            if (cancellationToken.IsCancellationRequested) tcs.TrySetCanceled(cancellationToken);
            else tcs.TrySetException(new TimeoutException($"no reply to {what} within {timeout.TotalMilliseconds:0} ms"));
        });
        try
        {
            Send(peer, request);
        }
        catch
        {
            peer.Pending.TryRemove(id, out _);
            throw;
        }
        if (!peer.IsConnected && peer.Pending.TryRemove(id, out _))
            throw new PeerDisconnectedException($"peer {peer.RemoteEndPoint} disconnected before replying to {what}: {peer.DisconnectReason}");
        return await tcs.Task.ConfigureAwait(false);
    }
}
