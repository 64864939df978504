using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Swarm.Hosting;

namespace Swarm.Coordinator.Service;

/// <summary>
/// Checks at start, before the host runs, that the coordinator can bind its UDP (nodes) and TCP (HTTP) addresses,
/// so that a port in use ends the program with one line naming the address and its flag — the host would log a
/// stack trace first. Each probe socket is closed at once; the real listeners bind a moment later.
/// </summary>
internal static class ListenAddressCheck
{
    /// <summary>Throws <see cref="CommandFailedException"/> naming the first address that cannot be bound.</summary>
    public static void EnsureBindable(IPEndPoint udp, IPEndPoint http)
    {
        ArgumentNullException.ThrowIfNull(udp);
        ArgumentNullException.ThrowIfNull(http);
        Probe(udp, SocketType.Dgram, ProtocolType.Udp, $"cannot listen for nodes on UDP {udp} (--listen)");
        Probe(http, SocketType.Stream, ProtocolType.Tcp, $"cannot serve HTTP on {http} (--http)");
    }

    /// <summary>True when <paramref name="e"/> (or an inner exception) says an address is already in use.</summary>
    public static bool IsAddressInUse(Exception e)
    {
        for (Exception? x = e; x is not null; x = x.InnerException)
            if (x is AddressInUseException || x is SocketException { SocketErrorCode: SocketError.AddressAlreadyInUse }) return true;
        return false;
    }

    private static void Probe(IPEndPoint endPoint, SocketType type, ProtocolType protocol, string what)
    {
        if (endPoint.Port == 0) return; // any free port: nothing can be in use
        using var socket = new Socket(endPoint.AddressFamily, type, protocol);
        try
        {
            socket.Bind(endPoint);
            if (type == SocketType.Stream) socket.Listen();
        }
        catch (SocketException e)
        {
            throw new CommandFailedException($"{what}: {Describe(e.SocketErrorCode, e.Message)}");
        }
    }

    private static string Describe(SocketError error, string message) => error switch
    {
        SocketError.AddressAlreadyInUse => "the address is already in use (is another coordinator running?)",
        SocketError.AddressNotAvailable => "the address does not belong to this machine",
        SocketError.AccessDenied => "permission denied (ports below 1024 need privileges)",
        _ => message,
    };
}
