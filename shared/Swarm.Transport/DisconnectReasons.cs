using System.Text;
using LiteNetLib;
using Swarm.Transport.Security;

namespace Swarm.Transport;

/// <summary>Words why LiteNetLib ended a connection, for exceptions and the log.</summary>
internal static class DisconnectReasons
{
    /// <summary>The reason, and whether the remote refused us (rejected the request, or closed with a refusal during the handshake).</summary>
    public static (string Reason, bool Refused) Describe(TransportPeer peer, DisconnectInfo info, TransportOptions options)
    {
        var ep = peer.RemoteEndPoint;
        string? said = info.AdditionalData is { AvailableBytes: > 0 } data
            ? HandshakeFrame.Sanitize(Encoding.UTF8.GetString(data.GetRemainingBytesSpan()))
            : null;
        return info.Reason switch
        {
            DisconnectReason.ConnectionRejected => ($"{ep} refused the connection: {said ?? "no reason given"}", true),
            DisconnectReason.ConnectionFailed => ($"no answer from {ep} within {options.ConnectTimeout.TotalMilliseconds:0} ms", false),
            DisconnectReason.Timeout => ($"no packets from {ep} for {options.DisconnectTimeout.TotalMilliseconds:0} ms", false),
            // A peer that fails our handshake closes the connection and says why.
            DisconnectReason.RemoteConnectionClose when said != null => ($"{ep} refused the connection: {said}", true),
            DisconnectReason.RemoteConnectionClose => ($"{ep} closed the connection", false),
            DisconnectReason.DisconnectPeerCalled => (peer.LocalCloseReason ?? "closed locally", false),
            _ => ($"{info.Reason} ({info.SocketErrorCode})", false),
        };
    }
}
