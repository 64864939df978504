namespace Swarm.Hosting;

/// <summary>
/// A failure the person running the command can act on — a port already in use, an unreachable coordinator, a memory
/// budget too small — as opposed to a usage error or a bug: printed as one line, exit code 1.
/// </summary>
public sealed class CommandFailedException(string message) : Exception(message);
