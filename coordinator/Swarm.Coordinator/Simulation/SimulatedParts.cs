using Swarm.Coordinator.Routing;
using Swarm.Protocol;

namespace Swarm.Coordinator.Simulation;

/// <summary>What happens at a point of virtual time.</summary>
internal enum SimEventKind
{
    Heartbeats, Evaluate, Sample, NodeArrival, NodeDeparture, NodeDisconnect, RangeLoaded, JobArrival, JobEnd, JobCheck, JobRetryRoute,
}

/// <summary>An event: its kind, the node or job it concerns, and the version it was scheduled for (stale versions are ignored).</summary>
internal readonly record struct SimEvent(SimEventKind Kind, long Id = 0, long Version = 0);

/// <summary>A simulated volunteer machine and what the simulator tracks of it.</summary>
internal sealed class SimulatedNode(int id, MachineProfile machine, (double Lat, double Lon) place, TimeSpan joinedAt)
{
    public int Id { get; set; } = id;
    public MachineProfile Machine { get; } = machine;
    public (double Lat, double Lon) Place { get; } = place;
    public double RttToCoordinatorMs { get; } = Geography.RttMs(place, Geography.Coordinator);
    public TimeSpan JoinedAt { get; } = joinedAt;
    /// <summary>Sends heartbeats and answers steps (false once it departed, abruptly or not).</summary>
    public bool Online { get; set; } = true;
    /// <summary>Version of the range being loaded: a later assignment makes an earlier load's completion stale.</summary>
    public long Assignment { get; set; }
    /// <summary>Milliseconds of compute the node spent on tokens.</summary>
    public double BusyMs { get; set; }
    /// <summary>Jobs routed through the node now.</summary>
    public HashSet<long> Jobs { get; } = [];
    /// <summary>Links it measured to next hops (the heartbeat's <see cref="LinkReport"/>s), sent when changed.</summary>
    public Dictionary<int, LinkReport> Links { get; } = [];
    public bool LinksChanged { get; set; }
}

/// <summary>A simulated generation job.</summary>
internal sealed class SimulatedJob(long id, TimeSpan submittedAt)
{
    public long Id { get; } = id;
    public TimeSpan SubmittedAt { get; } = submittedAt;
    /// <summary>Bumped by every new route or stall, so events of an earlier segment are ignored.</summary>
    public long Version { get; set; }
    /// <summary>Tokens generated so far.</summary>
    public int Done { get; set; }
    public int Recoveries { get; set; }
    public Route? Route { get; set; }
    /// <summary>When the current segment's first token arrives, and the decode interval after it.</summary>
    public TimeSpan FirstTokenAt { get; set; }
    public double TokenMs { get; set; }
    /// <summary>When the last accepted token arrived (inter-token gaps across recoveries count from it).</summary>
    public TimeSpan? LastTokenAt { get; set; }
    /// <summary>Since when the job is stuck on a departed node, and which.</summary>
    public TimeSpan? StalledAt { get; set; }
    public int StalledOn { get; set; }
    /// <summary>When routing started to wait for coverage (routing retries give up after the queue timeout).</summary>
    public TimeSpan? RoutingSince { get; set; }
    public bool Finished { get; set; }
}
