namespace Swarm.Hosting;

/// <summary>A user error on the command line or in a configuration: printed as one line, exit code 2.</summary>
public sealed class UsageException(string message) : Exception(message);
