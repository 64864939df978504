using System.Globalization;
using MessagePack;

namespace Swarm.Protocol;

/// <summary>
/// A half-open range of transformer layers [<see cref="Start"/>, <see cref="End"/>), like Petals' block indices
/// and the CLI's <c>--layers A:B</c>. The one layer-range type of the swarm: on the wire, in placement and routing.
/// </summary>
/// <remarks>
/// Keys: 0 = Start, 1 = End. Append-only. The constructor does not validate, because a decoded message may carry
/// any pair: <see cref="MessageValidator"/> rejects ranges that are not <see cref="IsValid"/>.
/// </remarks>
[MessagePackObject]
public readonly record struct LayerRange
{
    /// <summary>Creates the range [<paramref name="start"/>, <paramref name="end"/>).</summary>
    [SerializationConstructor]
    public LayerRange(int start, int end)
    {
        Start = start;
        End = end;
    }

    /// <summary>First layer held (inclusive).</summary>
    [Key(0)] public int Start { get; }

    /// <summary>One past the last layer held (exclusive).</summary>
    [Key(1)] public int End { get; }

    /// <summary>Number of layers in the range, <c>End - Start</c>.</summary>
    [IgnoreMember] public int Count => End - Start;

    /// <summary>True when 0 ≤ Start &lt; End.</summary>
    [IgnoreMember] public bool IsValid => Start >= 0 && End > Start;

    /// <summary>True when <paramref name="layer"/> lies in [Start, End).</summary>
    public bool Contains(int layer) => layer >= Start && layer < End;

    /// <summary>True when <paramref name="other"/> lies entirely inside this range.</summary>
    public bool Contains(LayerRange other) => other.Start >= Start && other.End <= End;

    /// <summary>True when the two ranges share at least one layer.</summary>
    public bool Overlaps(LayerRange other) => other.Start < End && Start < other.End;

    /// <summary>Formats as <c>[A,B)</c> (logs, error messages, span attributes).</summary>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"[{Start},{End})");

    /// <summary>Formats in the CLI's notation <c>A:B</c>, as <c>--layers</c> takes it and <c>swarm status</c> shows it; <see cref="TryParse"/> reads it back.</summary>
    public string ToCliNotation() => string.Create(CultureInfo.InvariantCulture, $"{Start}:{End}");

    /// <summary>
    /// Human wording for error messages: "layer 4" for a single layer, otherwise "layers 4-7"
    /// (inclusive, as people read it).
    /// </summary>
    public string Describe() => Count == 1
        ? string.Create(CultureInfo.InvariantCulture, $"layer {Start}")
        : string.Create(CultureInfo.InvariantCulture, $"layers {Start}-{End - 1}");

    /// <summary>Parses the CLI notation <c>A:B</c> (0 ≤ A &lt; B).</summary>
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

    /// <summary>Collapses a per-layer predicate into maximal contiguous ranges, e.g. the layers with zero replicas.</summary>
    public static IReadOnlyList<LayerRange> FromMask(int numLayers, Func<int, bool> selected)
    {
        ArgumentNullException.ThrowIfNull(selected);
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
        ArgumentNullException.ThrowIfNull(ranges);
        string s = string.Join(", ", ranges.Select(r => r.Describe()));
        return s.Length == 0 ? "none" : s;
    }
}
