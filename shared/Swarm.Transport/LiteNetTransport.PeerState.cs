using System.Collections.Concurrent;
using System.Net;
using LiteNetLib;
using Swarm.Protocol;

namespace Swarm.Transport;

/// <summary>The application-side state of one LiteNetLib peer.</summary>
public sealed partial class LiteNetTransport
{
    // ---- peer ---------------------------------------------------------------------------------

    internal sealed class PeerState : IPeer
    {
        private readonly LiteNetTransport _owner;
        private readonly CancellationTokenSource _disconnected = new();
        private volatile int _state; // 0 connecting, 1 connected, 2 closed
        private volatile string? _reason;
        private int _nextTransfer;
        private int _channelOffset;

        public PeerState(LiteNetTransport owner, NetPeer net)
        {
            _owner = owner;
            Net = net;
            RemoteEndPoint = new IPEndPoint(net.Address, net.Port);
        }

        public NetPeer Net { get; }
        public ConcurrentDictionary<long, TaskCompletionSource<Envelope>> Pending { get; } = new();
        public List<TaskCompletionSource<IPeer>> ConnectWaiters { get; } = []; // poll thread only
        public string? LocalCloseReason { get; private set; }

        public int Id => Net.Id;
        public IPEndPoint RemoteEndPoint { get; }
        public bool IsConnected => _state == 1;
        public bool IsClosed => _state == 2;
        public TimeSpan RoundTripTime => TimeSpan.FromMilliseconds(Net.RoundTripTime);
        public CancellationToken Disconnected => _disconnected.Token;
        public string? DisconnectReason => _reason;

        public long Send(Envelope envelope)
        {
            ArgumentNullException.ThrowIfNull(envelope);
            return _owner.Send(this, envelope);
        }

        public Task<Envelope> RequestAsync(Envelope request, TimeSpan timeout, CancellationToken cancellationToken = default) =>
            _owner.RequestAsync(this, request, timeout, cancellationToken);

        public void Disconnect(string reason)
        {
            LocalCloseReason = $"closed locally: {reason}";
            _owner.Enqueue(() => _owner._manager.DisconnectPeer(Net));
        }

        internal uint NextTransfer() => (uint)Interlocked.Increment(ref _nextTransfer);

        internal int NextChannelOffset(int chunks) => (int)((uint)Interlocked.Add(ref _channelOffset, chunks) % 64u);

        internal bool TryCompleteRequest(Envelope reply) =>
            Pending.TryRemove(reply.CorrelationId, out var tcs) && tcs.TrySetResult(reply);

        internal void MarkConnected()
        {
            if (_state != 0) return;
            _state = 1;
            foreach (var w in ConnectWaiters) w.TrySetResult(this);
            ConnectWaiters.Clear();
        }

        internal void MarkClosed(string reason, bool refused)
        {
            if (_state == 2) return;
            _reason = reason;
            _state = 2;
            foreach (var w in ConnectWaiters)
                w.TrySetException(refused ? new PeerRefusedException(reason) : new PeerDisconnectedException(reason));
            ConnectWaiters.Clear();
            foreach (var id in Pending.Keys.ToList())
                if (Pending.TryRemove(id, out var tcs))
                    tcs.TrySetException(new PeerDisconnectedException($"peer {RemoteEndPoint} disconnected before replying to message #{id}: {reason}"));
            try { _disconnected.Cancel(); } catch (AggregateException) { /* callbacks' exceptions are theirs */ }
        }

        public override string ToString() => $"peer #{Id} {RemoteEndPoint}";
    }
}
