using System.Collections.Concurrent;
using System.Net;

namespace Swarm.Transport.Nat;

/// <summary>
/// A relay for hops that cannot be punched (a symmetric NAT on one side): hands out <see cref="RelayAllocation"/>s —
/// a pair of UDP sockets forwarding opaque datagrams between two registered nodes — and closes those that stay silent
/// longer than the idle timeout (a live connection pings every second, so silence means the path or a node is gone).
/// Hosted by the coordinator; it needs its UDP ports reachable (ephemeral ports on <see cref="BindAddress"/>).
/// </summary>
public sealed class UdpRelay : IDisposable
{
    private readonly ConcurrentDictionary<RelayAllocation, byte> _open = new();
    private readonly TimeProvider _time;
    private readonly Timer _sweep;
    private long _closedBytes, _closedDatagrams;

    /// <summary>
    /// The idle timeout relays use by default (4 s): a connected pair of nodes pings every second, so this much silence
    /// means the path or one of the nodes is gone.
    /// </summary>
    public static readonly TimeSpan DefaultIdleTimeout = TimeSpan.FromSeconds(4);

    /// <param name="bind">Address the relay's sockets bind (the coordinator's listen address).</param>
    /// <param name="idleTimeout">An allocation with no datagram for this long is closed.</param>
    /// <param name="maxAllocations">Allocations open at once; beyond it <see cref="Allocate"/> refuses.</param>
    /// <param name="time">Clock of the idle timeout (tests).</param>
    public UdpRelay(IPAddress bind, TimeSpan idleTimeout, int maxAllocations = 256, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(bind);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(idleTimeout, TimeSpan.Zero);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxAllocations, 1);
        BindAddress = bind;
        IdleTimeout = idleTimeout;
        MaxAllocations = maxAllocations;
        _time = time ?? TimeProvider.System;
        _sweep = new Timer(_ => Sweep(), null, TimeSpan.FromMilliseconds(250), TimeSpan.FromMilliseconds(250));
    }

    /// <summary>Address of every allocation's sockets.</summary>
    public IPAddress BindAddress { get; }

    /// <summary>Silence after which an allocation closes.</summary>
    public TimeSpan IdleTimeout { get; }

    /// <summary>Most allocations open at once.</summary>
    public int MaxAllocations { get; }

    /// <summary>Allocations open now.</summary>
    public int Count => _open.Count;

    /// <summary>Bytes forwarded since the relay started, both directions, every allocation (open or closed).</summary>
    public long BytesForwarded => Interlocked.Read(ref _closedBytes) + _open.Keys.Sum(a => a.BytesForwarded);

    /// <summary>Datagrams forwarded since the relay started, both directions, every allocation (open or closed).</summary>
    public long DatagramsForwarded => Interlocked.Read(ref _closedDatagrams) + _open.Keys.Sum(a => a.DatagramsForwarded);

    /// <summary>Raised (on a timer thread) when an allocation closed because it went silent.</summary>
    public event Action<RelayAllocation>? Expired;

    /// <summary>Opens a relayed hop from the node at <paramref name="upstream"/> to the node at <paramref name="downstream"/> (their observed addresses).</summary>
    /// <exception cref="InvalidOperationException">The relay is full.</exception>
    /// <exception cref="System.Net.Sockets.SocketException">No port could be bound.</exception>
    public RelayAllocation Allocate(IPAddress upstream, IPAddress downstream)
    {
        if (_open.Count >= MaxAllocations) throw new InvalidOperationException($"the relay is full ({MaxAllocations} hops)");
        var allocation = new RelayAllocation(BindAddress, upstream, downstream, _time);
        _open[allocation] = 0;
        return allocation;
    }

    /// <summary>Closes <paramref name="allocation"/> (its hop is no longer used, or one of its nodes left).</summary>
    public void Release(RelayAllocation allocation)
    {
        ArgumentNullException.ThrowIfNull(allocation);
        allocation.Dispose();
        if (_open.TryRemove(allocation, out _)) Account(allocation);
    }

    private void Account(RelayAllocation closed)
    {
        Interlocked.Add(ref _closedBytes, closed.BytesForwarded);
        Interlocked.Add(ref _closedDatagrams, closed.DatagramsForwarded);
    }

    private void Sweep()
    {
        foreach (var allocation in _open.Keys)
        {
            if (!allocation.IsOpen) { if (_open.TryRemove(allocation, out _)) Account(allocation); continue; }
            if (allocation.Idle <= IdleTimeout) continue;
            Release(allocation);
            Expired?.Invoke(allocation);
        }
    }

    /// <summary>Closes every allocation.</summary>
    public void Dispose()
    {
        _sweep.Dispose();
        foreach (var allocation in _open.Keys) allocation.Dispose();
        _open.Clear();
    }
}
