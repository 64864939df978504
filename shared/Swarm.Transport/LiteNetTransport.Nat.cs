using System.Net;
using LiteNetLib;
using Swarm.Transport.Nat;

namespace Swarm.Transport;

/// <summary>NAT traversal of <see cref="LiteNetTransport"/>: reachability probes answered, punches sent from the transport's own socket.</summary>
public sealed partial class LiteNetTransport
{
    /// <summary>Punch datagrams per <see cref="PunchAsync"/>, one every <see cref="PunchInterval"/>: a lost one must not keep the hole shut.</summary>
    private const int PunchCount = 5;

    private static readonly TimeSpan PunchInterval = TimeSpan.FromMilliseconds(200);

    /// <inheritdoc/>
    public async Task PunchAsync(IPEndPoint target, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(target);
        var punch = NatSignal.Create(NatSignalKind.Punch, NatSignal.NewToken());
        for (int i = 0; i < PunchCount && _disposed == 0; i++)
        {
            if (i > 0) await Task.Delay(PunchInterval, cancellationToken).ConfigureAwait(false);
            Enqueue(() => _manager.SendUnconnectedMessage(punch, target));
        }
    }

    // LiteNetLib's receive thread. A probe is answered from this socket to its sender: that the probe arrived at all is
    // the answer (an acknowledgement the size of the probe, so a forged source gains no amplification). A punch did its
    // work in the sender's NAT and is dropped; anything else unconnected is dropped too.
    private void OnNatSignal(IPEndPoint from, NetPacketReader reader, UnconnectedMessageType type)
    {
        if (type != UnconnectedMessageType.BasicMessage || !NatSignal.TryRead(reader.GetRemainingBytesSpan(), out var kind, out var token)) return;
        if (kind != NatSignalKind.Probe) return;
        var ack = NatSignal.Create(NatSignalKind.ProbeAck, token);
        Enqueue(() => _manager.SendUnconnectedMessage(ack, from));
    }
}
