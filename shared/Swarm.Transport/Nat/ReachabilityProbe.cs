using System.Net;
using System.Net.Sockets;
using LiteNetLib;

namespace Swarm.Transport.Nat;

/// <summary>
/// The reachability check of a joining node (Petals' <c>server/reachability.py</c> idea): from a fresh UDP socket — one
/// the node has never sent to, so no NAT or stateful firewall in front of it has a mapping toward it — send a probe to the
/// endpoint the node's connection was seen coming from, and wait for the node's acknowledgement. A node that answers is
/// reachable by anyone at that endpoint; one that does not is behind a NAT (or a firewall) and needs punching or a relay.
/// </summary>
public static class ReachabilityProbe
{
    /// <summary>Probes sent per check, evenly over the timeout (a lost datagram must not make a node look unreachable).</summary>
    private const int Attempts = 4;

    /// <summary>True when <paramref name="target"/> acknowledged a probe within <paramref name="timeout"/>.</summary>
    /// <param name="bind">Address of the fresh socket (the coordinator's listen address, or a wildcard).</param>
    /// <param name="target">The node's observed endpoint.</param>
    /// <param name="timeout">How long to wait for the acknowledgement.</param>
    /// <param name="cancellationToken">Stops waiting (returns false).</param>
    public static async Task<bool> ProbeAsync(IPAddress bind, IPEndPoint target, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(bind);
        ArgumentNullException.ThrowIfNull(target);
        var token = NatSignal.NewToken();
        var acknowledged = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var listener = new EventBasedNetListener();
        listener.NetworkReceiveUnconnectedEvent += (from, reader, _) =>
        {
            if (NatSignal.TryRead(reader.GetRemainingBytesSpan(), out var kind, out var echoed)
                && kind == NatSignalKind.ProbeAck && echoed.SequenceEqual(token) && from.Address.Equals(target.Address))
                acknowledged.TrySetResult();
        };
        var manager = new NetManager(listener) { UnconnectedMessagesEnabled = true, UnsyncedEvents = true, IPv6Enabled = false };
        var v4 = bind.AddressFamily == AddressFamily.InterNetwork ? bind : IPAddress.Any;
        if (!manager.Start(v4, IPAddress.IPv6Any, 0)) throw new SocketException((int)SocketError.AddressNotAvailable);
        try
        {
            var probe = NatSignal.Create(NatSignalKind.Probe, token);
            var interval = timeout / Attempts;
            for (int i = 0; i < Attempts && !acknowledged.Task.IsCompleted; i++)
            {
                manager.SendUnconnectedMessage(probe, target);
                try { await acknowledged.Task.WaitAsync(interval, cancellationToken).ConfigureAwait(false); }
                catch (TimeoutException) { }
                catch (OperationCanceledException) { return false; }
            }
            return acknowledged.Task.IsCompleted;
        }
        finally
        {
            manager.Stop();
        }
    }
}
