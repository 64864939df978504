using System.Net;
using System.Net.Sockets;

namespace Swarm.Transport;

/// <summary>Parses "host:port" (IPv4, [IPv6], localhost or a DNS name) into an <see cref="IPEndPoint"/>.</summary>
public static class EndPoints
{
    public static bool TryParse(string? text, out IPEndPoint? endPoint)
    {
        endPoint = null;
        if (string.IsNullOrWhiteSpace(text)) return false;
        int colon = text.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(text[(colon + 1)..], out int port) || port is < 0 or > 65535) return false;
        string host = text[..colon].Trim('[', ']');
        if (host == "localhost") host = "127.0.0.1";
        if (!IPAddress.TryParse(host, out var ip))
        {
            try { ip = Dns.GetHostAddresses(host).FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork); }
            catch (SocketException) { return false; }
            if (ip is null) return false;
        }
        endPoint = new IPEndPoint(ip, port);
        return true;
    }
}
