using Swarm.Coordinator.Routing;
using Swarm.Protocol;

namespace Swarm.Coordinator.Jobs;

/// <summary>
/// A job's per-stage forward times, as the stages report them in <see cref="TokenResult.Timings"/>: the mean over decode
/// steps, or the last prefill/replay time of a stage that has run no decode step.
/// </summary>
internal sealed class StageTimings
{
    private readonly Dictionary<int, (double Sum, int Count)> _decode = [];
    private readonly Dictionary<int, double> _prefill = [];

    /// <summary>Adds the timings of one step of <paramref name="kind"/>.</summary>
    public void Add(StepKind kind, IEnumerable<StageTiming> timings)
    {
        foreach (var t in timings)
        {
            if (kind != StepKind.Decode) _prefill[t.NodeId] = t.Milliseconds;
            else
            {
                var (sum, count) = _decode.GetValueOrDefault(t.NodeId);
                _decode[t.NodeId] = (sum + t.Milliseconds, count + 1);
            }
        }
    }

    /// <summary>The stages of <paramref name="route"/> with their mean forward time (empty without a route).</summary>
    public IReadOnlyList<StageMean> MeansOver(Route? route) => route is null ? [] : [.. route.Hops.Select(h =>
    {
        int node = h.NodeId;
        double ms = _decode.TryGetValue(node, out var d) && d.Count > 0 ? d.Sum / d.Count : _prefill.GetValueOrDefault(node);
        return new StageMean(node, h.Layers.Start, h.Layers.End, ms);
    })];
}
