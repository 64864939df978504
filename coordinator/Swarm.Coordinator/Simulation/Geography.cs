namespace Swarm.Coordinator.Simulation;

/// <summary>
/// A synthetic geography: nodes live near one of a dozen population centres (weighted by where volunteers are), and the
/// round trip between two points is a base (last mile, queues) plus great-circle distance over fibre (200 km/ms) with
/// a path-inflation factor — the latency matrix, computed on demand instead of stored (10,000² entries would not fit).
/// </summary>
public static class Geography
{
    private static readonly (string Name, double Lat, double Lon, double Weight)[] Centres =
    [
        ("us-east", 40.7, -74.0, 0.16), ("us-west", 37.4, -122.1, 0.12), ("us-central", 41.9, -87.6, 0.06),
        ("brazil", -23.5, -46.6, 0.05), ("uk", 51.5, -0.1, 0.08), ("germany", 50.1, 8.7, 0.11), ("poland", 52.2, 21.0, 0.04),
        ("russia", 55.8, 37.6, 0.07), ("india", 19.1, 72.9, 0.08), ("china", 31.2, 121.5, 0.09), ("japan", 35.7, 139.7, 0.06),
        ("australia", -33.9, 151.2, 0.03), ("singapore", 1.35, 103.8, 0.05),
    ];

    /// <summary>Where the coordinator runs (us-east).</summary>
    public static readonly (double Lat, double Lon) Coordinator = (40.7, -74.0);

    /// <summary>A point near a population centre drawn by weight (within about 300 km of it).</summary>
    public static (double Lat, double Lon) Draw(Random random)
    {
        double total = Centres.Sum(c => c.Weight), u = random.NextDouble() * total, acc = 0;
        var pick = Centres[^1];
        foreach (var c in Centres)
        {
            acc += c.Weight;
            if (u < acc) { pick = c; break; }
        }
        return (pick.Lat + (random.NextDouble() - 0.5) * 5, pick.Lon + (random.NextDouble() - 0.5) * 5);
    }

    /// <summary>Round-trip milliseconds between two points: 8 ms base + distance ÷ 200 km/ms × 2 (both ways) × 1.6 (paths are not great circles).</summary>
    public static double RttMs((double Lat, double Lon) a, (double Lat, double Lon) b) => 8 + DistanceKm(a, b) / 200 * 2 * 1.6;

    /// <summary>Great-circle distance (haversine).</summary>
    public static double DistanceKm((double Lat, double Lon) a, (double Lat, double Lon) b)
    {
        const double R = 6371, Rad = Math.PI / 180;
        double dLat = (b.Lat - a.Lat) * Rad, dLon = (b.Lon - a.Lon) * Rad;
        double h = Math.Sin(dLat / 2) * Math.Sin(dLat / 2) + Math.Cos(a.Lat * Rad) * Math.Cos(b.Lat * Rad) * Math.Sin(dLon / 2) * Math.Sin(dLon / 2);
        return 2 * R * Math.Asin(Math.Min(1, Math.Sqrt(h)));
    }
}
