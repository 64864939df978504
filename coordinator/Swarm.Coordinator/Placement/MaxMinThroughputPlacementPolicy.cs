using Swarm.Protocol;

namespace Swarm.Coordinator.Placement;

/// <summary>
/// Petals-style placement. A node holds as many layers as fit in its memory after reserving KV space; it
/// contributes <c>LayerThroughput / length</c> tokens/s to each layer it holds. A joining node takes the start
/// that makes the swarm's per-layer throughput vector, sorted ascending, lexicographically largest — i.e. it
/// first fills uncovered layers, then lifts the weakest layer (ties: fewer uncovered fragments, lower start).
/// </summary>
internal sealed class MaxMinThroughputPlacementPolicy : IPlacementPolicy
{
    private readonly PlacementOptions _options;

    /// <summary>Creates the policy.</summary>
    /// <exception cref="ArgumentException">The shape or options are invalid (all problems listed).</exception>
    public MaxMinThroughputPlacementPolicy(ModelShape shape, PlacementOptions options)
    {
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(options);
        var errors = shape.Validate().Concat(options.Validate()).ToList();
        if (errors.Count > 0) throw new ArgumentException("invalid placement configuration: " + string.Join("; ", errors));
        Shape = shape;
        _options = options;
    }

    /// <inheritdoc/>
    public string Name => "max-min-throughput";

    /// <inheritdoc/>
    public ModelShape Shape { get; }

    private int L => Shape.NumLayers;

    /// <inheritdoc/>
    public int Capacity(PlacementNode node)
    {
        if (node.PinnedRange is LayerRange pinned) return pinned.Count;
        // What the node said one layer costs it (its weight format), else the model shape's f32 figures.
        long weights = node.LayerWeightBytes > 0 ? node.LayerWeightBytes : Shape.BytesPerLayer;
        long kv = node.KvBytesPerTokenPerLayer > 0 ? node.KvBytesPerTokenPerLayer : Shape.KvBytesPerTokenPerLayer;
        long perLayer = weights + kv * (long)_options.KvReserveTokens;
        long usable = node.MemoryBudgetBytes - Shape.ReservedBytesPerNode;
        if (usable <= 0) return 0;
        return (int)Math.Min(L, usable / perLayer);
    }

    /// <inheritdoc/>
    public LayerRange? ChooseJoinRange(IReadOnlyList<PlacementNode> swarm, PlacementNode joining)
    {
        if (joining.PinnedRange is LayerRange pinned) return pinned.End <= L ? pinned : null;
        int k = Capacity(joining);
        if (k == 0 || !(joining.LayerThroughput > 0)) return null;
        var baseline = Throughputs(swarm.Where(n => n.Id != joining.Id));
        return BestWindow(baseline, k, joining.LayerThroughput / k);
    }

    /// <inheritdoc/>
    public IReadOnlyList<RangeAssignment> Recover(IReadOnlyList<PlacementNode> swarm)
    {
        var layout = swarm.ToDictionary(n => n.Id);
        var original = swarm.ToDictionary(n => n.Id, n => n.Range);
        for (int move = 0; move < _options.MaxRecoveryMoves; move++)
        {
            var current = layout.Values.ToList();
            var totals = Totals(current);
            int uncovered = UncoveredCount(totals.Throughput);
            if (uncovered == 0) break;
            Candidate? best = null;
            foreach (var n in current.OrderBy(n => n.Id))
            {
                if (n.PinnedRange is not null || (n.Range is not null && !n.Movable)) continue;
                int cap = Capacity(n);
                if (cap == 0 || !(n.LayerThroughput > 0)) continue;
                var without = Without(totals, n);
                int uncoveredWithout = UncoveredCount(without);
                foreach (var r in RecoveryRanges(n, cap))
                {
                    // Cheap keys first (O(range)); the sorted vector (O(L log L)) only for a candidate that ties on them.
                    int left = uncoveredWithout;
                    for (int l = r.Start; l < r.End; l++) if (without[l] <= 0) left--;
                    if (left >= uncovered) continue;
                    int newLayers = new RangeAssignment(n.Id, n.Range, r, PlacementReason.Recover).NewLayers;
                    var c = new Candidate(n.Id, r, left, newLayers, n.InFlight, () => Add(without, r, n.LayerThroughput / r.Count));
                    if (best is null || c.IsBetterRecoveryThan(best)) best = c;
                }
            }
            if (best is null) break;
            layout[best.NodeId] = layout[best.NodeId] with { Range = best.Range };
        }
        return Diff(original, layout, PlacementReason.Recover);
    }

    /// <inheritdoc/>
    public RangeAssignment? Rebalance(IReadOnlyList<PlacementNode> swarm)
    {
        var totals = Totals(swarm);
        var now = totals.Throughput;
        if (UncoveredCount(now) > 0) return null;
        double currentMin = now.Min();
        double target = currentMin * _options.RebalanceImprovementFactor;
        // A move passes only if every layer ends at or above the target; a node adds throughput only inside its new window,
        // so that window must contain every layer below the target. A node whose capacity is shorter than the span of the
        // swarm's weak layers cannot pass (O(1) each), and for the others only windows over their weak span are tried: the
        // best window overall, when it passes, is one of them, so the outcome is the exhaustive search's at a fraction of
        // its O(N·L² log L) (which took 120 ms at 1,000 nodes).
        var weak = WeakSpan(now, target);
        Candidate? best = null;
        foreach (var n in swarm.OrderBy(n => n.Id))
        {
            if (n.PinnedRange is not null || !n.Movable || n.Range is not LayerRange held) continue;
            int k = Capacity(n);
            if (k == 0 || weak.Count > k) continue;
            var without = Without(totals, n);
            var own = WeakSpan(without, target);
            if (own.Count > k) continue;
            var r = BestWindow(without, k, n.LayerThroughput / k, Math.Max(0, own.End - k), Math.Min(own.Start, L - k));
            if (r == held) continue;
            var after = Add(without, r, n.LayerThroughput / k);
            if (UncoveredCount(after) > 0) continue;
            double newMin = after.Min();
            if (newMin < target) continue;
            var c = new Candidate(n.Id, r, 0, 0, n.InFlight, () => after);
            int cmp = best is null ? 1 : Compare(c.Sorted, best.Sorted);
            if (cmp > 0 || (cmp == 0 && c.InFlight < best!.InFlight)) best = c;
        }
        if (best is null) return null;
        var node = swarm.First(n => n.Id == best.NodeId);
        return new RangeAssignment(node.Id, node.Range, best.Range, PlacementReason.Rebalance);
    }

    /// <summary>The smallest range holding every layer whose throughput is below <paramref name="target"/> (never empty here: the minimum is below it).</summary>
    private static LayerRange WeakSpan(double[] t, double target)
    {
        int first = Array.FindIndex(t, v => v < target), last = Array.FindLastIndex(t, v => v < target);
        return first < 0 ? new LayerRange(0, 0) : new LayerRange(first, last + 1);
    }

    /// <inheritdoc/>
    public IReadOnlyList<RangeAssignment> PlaceAll(IReadOnlyList<PlacementNode> swarm)
    {
        var layout = swarm.ToDictionary(n => n.Id);
        var original = swarm.ToDictionary(n => n.Id, n => n.Range);
        var joinOrder = swarm.Where(n => n.Range is null)
            .OrderByDescending(n => n.PinnedRange is not null)
            .ThenByDescending(Capacity)
            .ThenByDescending(n => n.LayerThroughput)
            .ThenBy(n => n.Id)
            .ToList();
        foreach (var n in joinOrder)
        {
            var others = layout.Values.Where(o => o.Id != n.Id && o.Range is not null).ToList();
            if (ChooseJoinRange(others, n) is LayerRange r) layout[n.Id] = n with { Range = r };
        }
        var joined = Diff(original, layout, PlacementReason.Join);
        var recovered = Recover([.. layout.Values]);
        var merged = joined.ToDictionary(a => a.NodeId);
        foreach (var a in recovered)
            merged[a.NodeId] = merged.TryGetValue(a.NodeId, out var j) ? j with { To = a.To } : a;
        return [.. merged.Values.OrderBy(a => a.NodeId)];
    }

    private IEnumerable<LayerRange> RecoveryRanges(PlacementNode n, int cap)
    {
        int k = Math.Min(cap, L);
        // Relocation (or first placement) at full capacity anywhere.
        for (int s = 0; s + k <= L; s++) yield return new LayerRange(s, s + k);
        // Extension: keep the held layers, grow into spare memory.
        if (n.Range is LayerRange held && held.Count < cap && held.End <= L)
        {
            for (int s = Math.Max(0, held.End - cap); s <= held.Start; s++)
                for (int e = held.End; e <= Math.Min(L, s + cap); e++)
                    if (e - s > held.Count && e - s != k) yield return new LayerRange(s, e);
        }
    }

    private LayerRange BestWindow(double[] baseline, int k, double perLayer) => BestWindow(baseline, k, perLayer, 0, L - k);

    /// <summary>The best window of <paramref name="k"/> layers starting between <paramref name="firstStart"/> and <paramref name="lastStart"/>.</summary>
    private LayerRange BestWindow(double[] baseline, int k, double perLayer, int firstStart, int lastStart)
    {
        LayerRange best = new(firstStart, firstStart + k);
        double[]? bestSorted = null;
        int bestFragments = 0;
        for (int s = firstStart; s <= lastStart && s + k <= L; s++)
        {
            var r = new LayerRange(s, s + k);
            var after = Add(baseline, r, perLayer);
            var sorted = Sorted(after);
            int fragments = Fragments(after);
            int cmp = bestSorted is null ? 1 : Compare(sorted, bestSorted);
            if (cmp > 0 || (cmp == 0 && fragments < bestFragments))
            {
                best = r;
                bestSorted = sorted;
                bestFragments = fragments;
            }
        }
        return best;
    }

    private double[] Throughputs(IEnumerable<PlacementNode> nodes)
    {
        var t = new double[L];
        foreach (var n in nodes)
        {
            if (n.Range is not LayerRange r || !(n.LayerThroughput > 0)) continue;
            double per = n.LayerThroughput / r.Count;
            for (int l = r.Start; l < Math.Min(r.End, L); l++) t[l] += per;
        }
        return t;
    }

    /// <summary>Per-layer throughput and replica count of <paramref name="nodes"/>: one pass, so each node's "without me" is a subtraction.</summary>
    private (double[] Throughput, int[] Replicas) Totals(IEnumerable<PlacementNode> nodes)
    {
        var t = new double[L];
        var replicas = new int[L];
        foreach (var n in nodes)
        {
            if (n.Range is not LayerRange r || !(n.LayerThroughput > 0)) continue;
            double per = n.LayerThroughput / r.Count;
            for (int l = r.Start; l < Math.Min(r.End, L); l++)
            {
                t[l] += per;
                replicas[l]++;
            }
        }
        return (t, replicas);
    }

    /// <summary>
    /// The totals without <paramref name="n"/>'s contribution — O(L) instead of summing the other N − 1 nodes again (which
    /// made recovery and rebalancing O(N²·L)). A layer only <paramref name="n"/> held is exactly 0, never float residue.
    /// </summary>
    private double[] Without((double[] Throughput, int[] Replicas) totals, PlacementNode n)
    {
        var t = (double[])totals.Throughput.Clone();
        if (n.Range is not LayerRange r || !(n.LayerThroughput > 0)) return t;
        double per = n.LayerThroughput / r.Count;
        for (int l = r.Start; l < Math.Min(r.End, L); l++)
            t[l] = totals.Replicas[l] <= 1 ? 0 : Math.Max(0, t[l] - per);
        return t;
    }

    private static double[] Add(double[] baseline, LayerRange r, double perLayer)
    {
        var t = (double[])baseline.Clone();
        for (int l = r.Start; l < r.End; l++) t[l] += perLayer;
        return t;
    }

    private static double[] Sorted(double[] t)
    {
        var s = (double[])t.Clone();
        Array.Sort(s);
        return s;
    }

    private static int UncoveredCount(double[] t) => t.Count(v => v <= 0);

    private static int Fragments(double[] t)
    {
        int f = 0;
        for (int l = 0; l < t.Length; l++)
            if (t[l] <= 0 && (l == 0 || t[l - 1] > 0)) f++;
        return f;
    }

    /// <summary>Lexicographic comparison of ascending vectors, with a relative tolerance so float noise never decides.</summary>
    private static int Compare(double[] a, double[] b)
    {
        for (int i = 0; i < a.Length; i++)
        {
            double tol = 1e-9 * Math.Max(Math.Abs(a[i]), Math.Abs(b[i]));
            if (a[i] > b[i] + tol) return 1;
            if (a[i] < b[i] - tol) return -1;
        }
        return 0;
    }

    private static List<RangeAssignment> Diff(
        Dictionary<int, LayerRange?> original, Dictionary<int, PlacementNode> layout, PlacementReason reason) =>
        [.. layout.Values
            .Where(n => n.Range is not null && n.Range != original[n.Id])
            .OrderBy(n => n.Id)
            .Select(n => new RangeAssignment(n.Id, original[n.Id], n.Range!.Value, reason))];

    /// <summary>A possible move; its per-layer throughputs after the move (<paramref name="after"/>) are sorted only when a comparison needs them.</summary>
    private sealed class Candidate(int nodeId, LayerRange range, int uncovered, int newLayers, int inFlight, Func<double[]> after)
    {
        private double[]? _sorted;
        private int _fragments = -1;

        public int NodeId => nodeId;
        public LayerRange Range => range;
        public int InFlight => inFlight;
        public double[] Sorted => _sorted ??= MaxMinThroughputPlacementPolicy.Sorted(After);
        private int Fragments => _fragments >= 0 ? _fragments : _fragments = MaxMinThroughputPlacementPolicy.Fragments(After);
        private double[] After => _after ??= after();
        private double[]? _after;

        // Fewest uncovered layers, then the cheapest move (fewest layers to load), then the node disturbing the
        // fewest running jobs, then the strongest weakest layer, then fewest gaps; remaining ties keep the first
        // found (lowest node id, lowest start).
        public bool IsBetterRecoveryThan(Candidate other)
        {
            if (uncovered != other.UncoveredLeft) return uncovered < other.UncoveredLeft;
            if (newLayers != other.NewLayerCount) return newLayers < other.NewLayerCount;
            if (inFlight != other.InFlight) return inFlight < other.InFlight;
            int cmp = Compare(Sorted, other.Sorted);
            if (cmp != 0) return cmp > 0;
            return Fragments < other.Fragments;
        }

        private int UncoveredLeft => uncovered;
        private int NewLayerCount => newLayers;
    }
}
