using System.Net;
using Microsoft.Extensions.Logging;

namespace Swarm.Transport;

/// <summary>Log messages of the transport; event ids 3000–3099 are reserved for it (3010: <see cref="RepeatedLogLimiter"/>).</summary>
internal static partial class TransportLog
{
    [LoggerMessage(EventId = 3000, Level = LogLevel.Information, Message = "Transport listening on {EndPoint} ({Channels} channels for large messages)")]
    public static partial void Listening(ILogger logger, IPEndPoint endPoint, int channels);

    [LoggerMessage(EventId = 3001, Level = LogLevel.Warning, Message = "Refused connection from {EndPoint}: {Reason}")]
    public static partial void Refused(ILogger logger, IPEndPoint endPoint, string reason);

    [LoggerMessage(EventId = 3002, Level = LogLevel.Information, Message = "Peer {EndPoint} connected (#{PeerId})")]
    public static partial void PeerConnected(ILogger logger, IPEndPoint endPoint, int peerId);

    [LoggerMessage(EventId = 3003, Level = LogLevel.Information, Message = "Peer {EndPoint} disconnected: {Reason}")]
    public static partial void PeerDisconnected(ILogger logger, IPEndPoint endPoint, string reason);

    [LoggerMessage(EventId = 3004, Level = LogLevel.Warning, Message = "Dropped malformed message from {EndPoint}: {Error}")]
    public static partial void Malformed(ILogger logger, IPEndPoint endPoint, string error);

    [LoggerMessage(EventId = 3005, Level = LogLevel.Warning, Message = "Inbound queue full ({Capacity}); dropped {Kind} #{MessageId} from {EndPoint} and told the sender it is overloaded")]
    public static partial void InboundFull(ILogger logger, int capacity, string kind, long messageId, IPEndPoint endPoint);

    [LoggerMessage(EventId = 3006, Level = LogLevel.Warning, Message = "Dropped a message from {EndPoint}: {Reason}")]
    public static partial void ReassemblyDropped(ILogger logger, IPEndPoint endPoint, string reason);

    [LoggerMessage(EventId = 3007, Level = LogLevel.Error, Message = "Transport poll loop error")]
    public static partial void PollError(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 3008, Level = LogLevel.Warning, Message = "Could not connect to {EndPoint}: {Reason}")]
    public static partial void ConnectFailed(ILogger logger, IPEndPoint endPoint, string reason);

    [LoggerMessage(EventId = 3011, Message = "LiteNetLib: {Message}")]
    public static partial void LiteNetLib(ILogger logger, LogLevel level, string message);

    [LoggerMessage(EventId = 3009, Level = LogLevel.Debug, Message = "Network error from {EndPoint}: {Error}")]
    public static partial void NetworkError(ILogger logger, IPEndPoint endPoint, System.Net.Sockets.SocketError error);

    [LoggerMessage(EventId = 3020, Level = LogLevel.Information, Message = "Transport identity {Fingerprint}; every connection runs {Protocol}")]
    public static partial void Identity(ILogger logger, string fingerprint, string protocol);

    [LoggerMessage(EventId = 3021, Level = LogLevel.Information, Message = "Peer {EndPoint} connected and authenticated as {Fingerprint} ({Protocol}, #{PeerId})")]
    public static partial void PeerAuthenticated(ILogger logger, IPEndPoint endPoint, string fingerprint, string protocol, int peerId);

    [LoggerMessage(EventId = 3022, Level = LogLevel.Warning, Message = "Dropped a record from {EndPoint} ({Fingerprint}): {Reason}")]
    public static partial void RecordDropped(ILogger logger, IPEndPoint endPoint, string fingerprint, string reason);

    [LoggerMessage(EventId = 3023, Level = LogLevel.Warning, Message = "Handshake with {EndPoint}, which connected to us, failed: {Reason}")]
    public static partial void HandshakeAborted(ILogger logger, IPEndPoint endPoint, string reason);
}
