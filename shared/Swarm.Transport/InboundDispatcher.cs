using System.Collections.Concurrent;
using System.Net;
using System.Threading.Channels;
using LiteNetLib;
using Swarm.Protocol;
using Swarm.Transport.Security;

namespace Swarm.Transport;

/// <summary>
/// The receiving end of a <see cref="LiteNetTransport"/> on its poll thread: takes what LiteNetLib's receive thread
/// completed — handshake frames and whole messages, in arrival order — hands frames to the handshake, opens records
/// with the peer's channel, decodes envelopes, completes pending requests and feeds the inbound queue. Every message's
/// bytes hold their share of the reassembly budget until handled.
/// </summary>
internal sealed class InboundDispatcher(
    TransportOptions options,
    MessageCodec codec,
    Reassembler reassembly,
    TransportCounters counters,
    TransportDiagnostics diagnostics,
    PeerAuthenticator? auth,
    ChannelWriter<InboundMessage> inbound,
    Action<TransportPeer> connectPlaintext,
    Func<IPEndPoint> localEndPoint)
{
    private readonly record struct Arrival(TransportPeer Peer, byte[] Bytes, bool IsHandshake);

    private readonly ConcurrentQueue<Arrival> _arrivals = new();

    /// <summary>Queues a complete message (its bytes reserved in the reassembly budget). Any thread.</summary>
    public void AddMessage(TransportPeer peer, byte[] message) => _arrivals.Enqueue(new Arrival(peer, message, IsHandshake: false));

    /// <summary>Queues a handshake frame (not part of the budget). Any thread.</summary>
    public void AddHandshakeFrame(TransportPeer peer, byte[] frame) => _arrivals.Enqueue(new Arrival(peer, frame, IsHandshake: true));

    /// <summary>Handles everything queued. Poll thread.</summary>
    public void Drain()
    {
        while (_arrivals.TryDequeue(out var arrival))
        {
            if (arrival.IsHandshake)
            {
                if (arrival.Peer.IsClosed) continue;
                if (auth is null) diagnostics.Malformed(arrival.Peer.RemoteEndPoint, "a handshake frame, but this transport runs without encryption");
                else auth.Receive(arrival.Peer, arrival.Bytes);
                continue;
            }
            bool kept = false;
            try
            {
                kept = Dispatch(arrival.Peer, arrival.Bytes);
            }
            finally
            {
                if (!kept) reassembly.Release(arrival.Bytes.Length);
            }
        }
    }

    /// <summary>Delivers the records that overtook the handshake of a peer now established. Poll thread.</summary>
    public void DeliverEarlyRecords(TransportPeer peer)
    {
        foreach (var record in peer.EarlyRecords)
        {
            try { Dispatch(peer, record); }
            finally { reassembly.Release(record.Length); }
        }
        peer.EarlyRecords.Clear();
    }

    /// <summary>Forgets the records a closed peer left waiting. Poll thread.</summary>
    public void ReleaseEarlyRecords(TransportPeer peer)
    {
        foreach (var record in peer.EarlyRecords) reassembly.Release(record.Length);
        peer.EarlyRecords.Clear();
    }

    /// <summary>Forgets everything queued (the transport stopped).</summary>
    public void Clear()
    {
        while (_arrivals.TryDequeue(out var arrival))
            if (!arrival.IsHandshake) reassembly.Release(arrival.Bytes.Length);
    }

    /// <summary>Opens, decodes and delivers a complete message. True when it keeps the bytes for later (they overtook the handshake).</summary>
    private bool Dispatch(TransportPeer peer, byte[] bytes)
    {
        if (auth is null)
        {
            if (!peer.IsConnected && !peer.IsClosed && peer.Net.ConnectionState == ConnectionState.Connected) connectPlaintext(peer); // its Connected event is still queued
        }
        else if (peer.Channel is not { } channel)
        {
            // The responder's first records may complete before its confirmation was processed here: keep them.
            if (peer.IsAuthenticating && !peer.IsInbound) { peer.EarlyRecords.Add(bytes); return true; }
            diagnostics.Malformed(peer.RemoteEndPoint, "a message before the handshake completed");
            return false;
        }
        else
        {
            var opened = channel.TryOpen(bytes, out var plaintext);
            if (opened != OpenResult.Opened)
            {
                diagnostics.RecordDropped(peer.RemoteEndPoint, peer.RemoteFingerprint, opened);
                return false;
            }
            bytes = plaintext;
        }
        Deliver(peer, bytes);
        return false;
    }

    private void Deliver(TransportPeer peer, byte[] bytes)
    {
        if (!codec.TryDeserialize(bytes, out var envelope, out var error))
        {
            diagnostics.Malformed(peer.RemoteEndPoint, error);
            return;
        }
        Interlocked.Increment(ref counters._messagesReceived);
        Interlocked.Add(ref counters._bytesReceived, bytes.Length);
        if (envelope.CorrelationId != 0 && peer.TryCompleteRequest(envelope)) return;
        if (inbound.TryWrite(new InboundMessage(peer, envelope))) return;

        diagnostics.InboundFull(options.InboundCapacity, envelope.Body.GetType().Name, envelope.MessageId, peer.RemoteEndPoint);
        if (envelope.Body is not ErrorReply && peer.IsConnected)
        {
            try
            {
                peer.Send(envelope.CreateReply(new ErrorReply { Code = ErrorCode.Overloaded, Message = $"{localEndPoint()} is overloaded: inbound queue full, {envelope.Body.GetType().Name} #{envelope.MessageId} dropped" }));
            }
            catch (PeerDisconnectedException)
            {
                // gone meanwhile; nothing to tell
            }
        }
    }
}
