namespace Swarm.Engine;

/// <summary>
/// How many compute threads a process gets when several compute processes share one host (a local swarm: N node
/// processes on the same cores). Each gets an equal share of the cores, at least one: more threads than cores make the
/// processes' fork-join regions wait for threads that are descheduled, which costs far more than the parallelism gains.
/// </summary>
public static class ThreadBudget
{
    /// <summary>Threads for each of <paramref name="processes"/> compute processes on <paramref name="cores"/> cores: ⌊cores / processes⌋, at least 1.</summary>
    public static int PerProcess(int processes, int cores)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(processes, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(cores, 1);
        return Math.Max(1, cores / processes);
    }

    /// <summary><see cref="PerProcess(int, int)"/> on this machine's cores (<see cref="Environment.ProcessorCount"/>).</summary>
    public static int PerProcess(int processes) => PerProcess(processes, Environment.ProcessorCount);
}
