using Swarm.Protocol;

namespace Swarm.Tests.Protocol;

/// <summary>Sample bodies shared with other test folders.</summary>
internal static class ProtocolSamplesAccess
{
    public static IMessage ForwardRequest => ProtocolSamples.All["ForwardRequest"].Body;
}
