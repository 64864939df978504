using System.Net;
using System.Net.Sockets;

namespace Swarm.Tests.Integration;

/// <summary>
/// The tests' one way to pick a port number: a port on 127.0.0.1, free for TCP and UDP, for a child process that must be
/// told its port up front because it cannot bind port 0 and report back (a node's <c>--metrics-port</c>, served by an
/// <see cref="HttpListener"/>; a coordinator whose <c>--listen</c>/<c>--http</c> a test names; an address nothing may
/// answer at). Everything else binds port 0 itself: in-process sockets read their <c>LocalEndPoint</c>, the coordinator
/// writes its <c>--ready-file</c>.
/// </summary>
/// <remarks>
/// Picking a port by binding port 0 and releasing it races: the kernel may hand the same port to the next process
/// that binds port 0 or connects. This helper avoids both ways of losing the port. It picks only ports outside the
/// kernel's ephemeral range (<c>/proc/sys/net/ipv4/ip_local_port_range</c>), which the kernel never assigns on its
/// own, and it holds an exclusive lock file per port (flock, across processes) until disposed, so concurrent test
/// runs on the same machine never pick the same port. Only a program that binds that exact number on purpose can
/// still take it, as with any fixed port.
/// </remarks>
internal sealed class ReservedPort : IDisposable
{
    private static readonly string LockDir = Path.Combine(Path.GetTempPath(), "swarm-test-ports");
    private readonly FileStream _lock;

    private ReservedPort(int port, FileStream lockFile)
    {
        Port = port;
        _lock = lockFile;
    }

    /// <summary>The reserved port; free (TCP and UDP) when reserved, and no other user of this helper gets it until disposal.</summary>
    public int Port { get; }

    /// <summary>Reserves a port that is free now and that the kernel will not give to anyone else.</summary>
    public static ReservedPort Take()
    {
        Directory.CreateDirectory(LockDir);
        var (low, high) = NonEphemeralRange();
        int start = Random.Shared.Next(low, high);
        for (int i = 0; i < high - low; i++)
        {
            int port = low + (start - low + i) % (high - low);
            FileStream? held = null;
            try
            {
                // FileShare.None takes an exclusive flock on Unix: another process (or another Take) fails here.
                held = new FileStream(Path.Combine(LockDir, $"{port}.lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
                if (IsFree(port)) return new ReservedPort(port, held);
            }
            catch (IOException) { } // locked by another test run: try the next port
            held?.Dispose();
        }
        throw new InvalidOperationException($"no free port on 127.0.0.1 in [{low}, {high})");
    }

    /// <summary>Ports below the kernel's ephemeral range: [20000, start of the range) on Linux, [20000, 32768) elsewhere.</summary>
    private static (int Low, int High) NonEphemeralRange()
    {
        const string rangeFile = "/proc/sys/net/ipv4/ip_local_port_range";
        int ephemeralLow = 32768;
        if (File.Exists(rangeFile) && int.TryParse(File.ReadAllText(rangeFile).Split((char[])['\t', ' ', '\n'], StringSplitOptions.RemoveEmptyEntries)[0], out int lo))
            ephemeralLow = lo;
        int low = Math.Min(20000, ephemeralLow / 2);
        return (low, ephemeralLow);
    }

    private static bool IsFree(int port)
    {
        using var tcp = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            tcp.Bind(new IPEndPoint(IPAddress.Loopback, port));
            tcp.Listen();
            udp.Bind(new IPEndPoint(IPAddress.Loopback, port));
            return true;
        }
        catch (SocketException) { return false; }
    }

    /// <summary>Releases the lock: the port may be reserved again.</summary>
    public void Dispose() => _lock.Dispose();
}
