namespace Swarm.Coordinator.Security;

/// <summary>How a CLI client reaches a coordinator that asks for a key or serves HTTPS.</summary>
/// <param name="ApiKey">Sent as <c>Authorization: Bearer KEY</c>; null sends none.</param>
/// <param name="CaCertFile">PEM file of CAs (or the server's own certificate) to trust besides the system store; null = system store only.</param>
public sealed record CoordinatorClientCredentials(string? ApiKey, string? CaCertFile)
{
    /// <summary>No key, the system trust store.</summary>
    public static CoordinatorClientCredentials None { get; } = new(null, null);
}
