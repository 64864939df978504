using System.Net;
using Swarm.Transport.Security;

namespace Swarm.Transport;

/// <summary>Opening connections of <see cref="LiteNetTransport"/>: started and abandoned on the poll thread.</summary>
public sealed partial class LiteNetTransport
{
    /// <inheritdoc/>
    public Task<IPeer> ConnectAsync(IPEndPoint remote, CancellationToken cancellationToken = default) =>
        ConnectAsync(remote, ReadOnlyMemory<byte>.Empty, cancellationToken);

    /// <inheritdoc/>
    public async Task<IPeer> ConnectAsync(IPEndPoint remote, ReadOnlyMemory<byte> expectedKey, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(remote);
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (!expectedKey.IsEmpty && expectedKey.Length != PeerKey.Length)
            throw new ArgumentException($"a public key is {PeerKey.Length} bytes, not {expectedKey.Length}", nameof(expectedKey));
        var tcs = new TaskCompletionSource<IPeer>(TaskCreationOptions.RunContinuationsAsynchronously);
        Enqueue(() => StartConnect(remote, expectedKey, tcs));
        using var reg = cancellationToken.Register(() =>
        {
            if (tcs.TrySetCanceled(cancellationToken))
                Enqueue(() => AbandonConnect(remote));
        });
        return await tcs.Task.ConfigureAwait(false);
    }

    private void StartConnect(IPEndPoint remote, ReadOnlyMemory<byte> expectedKey, TaskCompletionSource<IPeer> tcs)
    {
        foreach (var p in _peers.Values)
        {
            if (!p.RemoteEndPoint.Equals(remote) || p.IsClosed) continue;
            if (!p.IsConnected) p.ConnectWaiters.Add((tcs, expectedKey));
            else if (p.Mismatch(expectedKey) is { } refusal) tcs.TrySetException(new PeerRefusedException(refusal));
            else tcs.TrySetResult(p);
            return;
        }
        var net = _manager.Connect(remote, ConnectRequest.Build(_options.ProtocolVersion, _options.Encrypt).AsSpan());
        if (net is null)
        {
            tcs.TrySetException(new PeerDisconnectedException($"could not start a connection to {remote} (a connection attempt is already in progress)"));
            return;
        }
        var state = _peers.GetOrAdd(net, n => new TransportPeer(this, n, inbound: false));
        if (state.Handshake is null && !state.IsConnected) _auth?.BeginOutbound(state, expectedKey);
        state.ConnectWaiters.Add((tcs, expectedKey));
    }

    private void AbandonConnect(IPEndPoint remote)
    {
        foreach (var p in _peers.Values)
            if (p.RemoteEndPoint.Equals(remote) && !p.IsConnected && !p.IsClosed && p.ConnectWaiters.All(w => w.Waiter.Task.IsCompleted))
                _manager.DisconnectPeer(p.Net);
    }
}
