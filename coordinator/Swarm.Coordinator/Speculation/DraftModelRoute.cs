using Swarm.Coordinator.Jobs;
using Swarm.Coordinator.Membership;
using Swarm.Protocol;

namespace Swarm.Coordinator.Speculation;

/// <summary>Whether a step of a session drafts with the draft model on the route's last node (<see cref="SpeculationMode.DraftModel"/>).</summary>
internal static class DraftModelRoute
{
    /// <summary>
    /// True when the route's last node announced the coordinator's draft model — and, for a sampling job whose session is
    /// spot-checked on its last hop, the shadow did too: sampling verifies drafts against the draft model's distributions,
    /// which a shadow without the model cannot compute, so it would decide otherwise and look like a liar. (Greedy
    /// acceptance needs no distribution: any node verifies alike.) False also without a draft model.
    /// </summary>
    public static bool Drafts(SpeculationOptions options, NodeRegistry registry, RouteSession session, SamplingParams sampling)
    {
        if (options.DraftModel.Length == 0) return false;
        bool Holds(int node) => registry.Get(node)?.Info.DraftModel == options.DraftModel;
        if (!Holds(session.Route.Hops[^1].NodeId)) return false;
        return sampling.Temperature <= 0 || session.Check is not { } check || check.HopIndex != session.WireRoute.Length - 1 || Holds(check.Shadow.NodeId);
    }
}
