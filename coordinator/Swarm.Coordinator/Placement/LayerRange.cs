using System.Globalization;

namespace Swarm.Coordinator.Placement;

/// <summary>
/// A half-open range of transformer layers <c>[Start, End)</c>, like Petals' block indices and
/// the CLI's <c>--layers A:B</c>.
/// </summary>
public readonly record struct LayerRange
{
    /// <summary>Creates <c>[start, end)</c>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">start is negative or end ≤ start.</exception>
    public LayerRange(int start, int end)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        if (end <= start)
            throw new ArgumentOutOfRangeException(nameof(end), end, $"end must be greater than start ({start})");
        Start = start;
        End = end;
    }

    /// <summary>First layer in the range.</summary>
    public int Start { get; }

    /// <summary>One past the last layer in the range.</summary>
    public int End { get; }

    /// <summary>Number of layers, <c>End - Start</c>.</summary>
    public int Length => End - Start;

    /// <summary>True when <paramref name="layer"/> lies in <c>[Start, End)</c>.</summary>
    public bool Contains(int layer) => layer >= Start && layer < End;

    /// <summary>True when <paramref name="other"/> lies entirely inside this range.</summary>
    public bool Contains(LayerRange other) => other.Start >= Start && other.End <= End;

    /// <summary>True when the two ranges share at least one layer.</summary>
    public bool Overlaps(LayerRange other) => other.Start < End && Start < other.End;

    /// <summary>Formats as <c>A:B</c>, the CLI's notation.</summary>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Start}:{End}");

    /// <summary>
    /// Human wording for error messages: "layer 4" for a single layer, otherwise "layers 4-7"
    /// (inclusive, as people read it).
    /// </summary>
    public string Describe() => Length == 1
        ? string.Create(CultureInfo.InvariantCulture, $"layer {Start}")
        : string.Create(CultureInfo.InvariantCulture, $"layers {Start}-{End - 1}");

    /// <summary>Parses <c>A:B</c>.</summary>
    public static bool TryParse(string? text, out LayerRange range)
    {
        range = default;
        if (text is null) return false;
        int colon = text.IndexOf(':', StringComparison.Ordinal);
        if (colon <= 0) return false;
        if (!int.TryParse(text.AsSpan(0, colon), NumberStyles.None, CultureInfo.InvariantCulture, out int a)) return false;
        if (!int.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int b)) return false;
        if (b <= a) return false;
        range = new LayerRange(a, b);
        return true;
    }

    /// <summary>
    /// Collapses a per-layer predicate into maximal contiguous ranges, e.g. the layers with zero replicas.
    /// </summary>
    public static IReadOnlyList<LayerRange> FromMask(int numLayers, Func<int, bool> selected)
    {
        var result = new List<LayerRange>();
        int i = 0;
        while (i < numLayers)
        {
            if (!selected(i)) { i++; continue; }
            int start = i;
            while (i < numLayers && selected(i)) i++;
            result.Add(new LayerRange(start, i));
        }
        return result;
    }

    /// <summary>"layers 4-5, layer 9" for a list of ranges; "none" when empty.</summary>
    public static string DescribeAll(IEnumerable<LayerRange> ranges)
    {
        string s = string.Join(", ", ranges.Select(r => r.Describe()));
        return s.Length == 0 ? "none" : s;
    }
}
