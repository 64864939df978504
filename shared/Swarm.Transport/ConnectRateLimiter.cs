using System.Net;
using System.Net.Sockets;

namespace Swarm.Transport;

/// <summary>
/// A token bucket per source address for connection attempts (as wireguard-go's <c>ratelimiter</c> does for
/// handshake initiations): each address may make <see cref="Burst"/> attempts at once and then
/// <see cref="RatePerSecond"/> per second. IPv6 sources are grouped by their /64, which one host usually owns whole.
/// Thread-safe; I/O-free; driven by an injected clock.
/// </summary>
/// <remarks>
/// Memory is bounded: at most <see cref="MaxAddresses"/> buckets exist; buckets that have refilled completely are
/// forgotten by <see cref="Sweep"/>. When the table is full of active addresses (a flood from many sources), attempts
/// from further addresses are refused until some bucket refills — the limiter fails closed.
/// </remarks>
internal sealed class ConnectRateLimiter
{
    /// <summary>Most addresses tracked at once.</summary>
    public const int MaxAddresses = 65_536;

    private sealed class Bucket
    {
        public double Tokens;
        public long Updated;
    }

    private readonly Dictionary<IPAddress, Bucket> _buckets = new();
    private readonly TimeProvider _time;

    public ConnectRateLimiter(double ratePerSecond, int burst, TimeProvider time)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(ratePerSecond);
        ArgumentOutOfRangeException.ThrowIfLessThan(burst, 1);
        RatePerSecond = ratePerSecond;
        Burst = burst;
        _time = time;
    }

    /// <summary>Refill rate per address.</summary>
    public double RatePerSecond { get; }

    /// <summary>Bucket size per address.</summary>
    public int Burst { get; }

    /// <summary>Addresses currently tracked.</summary>
    public int Count { get { lock (_buckets) return _buckets.Count; } }

    /// <summary>Takes one token for <paramref name="address"/>; false when it has none left (the attempt should be dropped).</summary>
    public bool TryAcquire(IPAddress address)
    {
        var key = KeyOf(address);
        long now = _time.GetTimestamp();
        lock (_buckets)
        {
            if (!_buckets.TryGetValue(key, out var bucket))
            {
                if (_buckets.Count >= MaxAddresses)
                {
                    SweepLocked(now);
                    if (_buckets.Count >= MaxAddresses) return false;
                }
                bucket = new Bucket { Tokens = Burst, Updated = now };
                _buckets[key] = bucket;
            }
            Refill(bucket, now);
            if (bucket.Tokens < 1) return false;
            bucket.Tokens -= 1;
            return true;
        }
    }

    /// <summary>Forgets addresses whose bucket is full again (they would start over full anyway).</summary>
    public void Sweep()
    {
        long now = _time.GetTimestamp();
        lock (_buckets) SweepLocked(now);
    }

    private void SweepLocked(long now)
    {
        foreach (var (address, bucket) in _buckets.ToList())
        {
            Refill(bucket, now);
            if (bucket.Tokens >= Burst) _buckets.Remove(address);
        }
    }

    private void Refill(Bucket bucket, long now)
    {
        double seconds = _time.GetElapsedTime(bucket.Updated, now).TotalSeconds;
        bucket.Tokens = Math.Min(Burst, bucket.Tokens + seconds * RatePerSecond);
        bucket.Updated = now;
    }

    /// <summary>The bucket key: the IPv4 address (also when IPv4-mapped), or the /64 prefix of an IPv6 address.</summary>
    internal static IPAddress KeyOf(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6) return address.MapToIPv4();
        if (address.AddressFamily != AddressFamily.InterNetworkV6) return address;
        var bytes = address.GetAddressBytes();
        Array.Clear(bytes, 8, 8);
        return new IPAddress(bytes);
    }
}
