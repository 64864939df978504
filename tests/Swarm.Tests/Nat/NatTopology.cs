using System.Diagnostics;
using Xunit;

namespace Swarm.Tests.Nat;

/// <summary>
/// A small internet inside Linux network namespaces, created for one test and deleted by <see cref="Dispose"/>:
/// a "public" namespace whose bridge joins the WAN side of three NAT routers (10.200.0.0/24, coordinator at
/// <see cref="CoordinatorAddress"/>), and behind each router a host namespace on its own LAN. Routers A and B masquerade
/// with endpoint-independent mapping (Linux keeps the source port); router C masquerades with <c>fully-random</c> ports (a
/// symmetric NAT: every destination gets another port). Every router drops unsolicited inbound packets, as home routers do.
/// No interface is created in the caller's namespace and no address outside the namespaces is used.
/// </summary>
internal sealed class NatTopology : IDisposable
{
    /// <summary>Prefix of every namespace a topology creates (leftovers of a crashed run are deleted by it).</summary>
    public const string Prefix = "swnat-";

    /// <summary>The coordinator's address in the public namespace.</summary>
    public const string CoordinatorAddress = "10.200.0.1";

    /// <summary>A second address in the public namespace, for a volunteer relay node (a public machine of its own).</summary>
    public const string RelayAddress = "10.200.0.2";

    private readonly List<string> _namespaces = [];
    private readonly string _id = Guid.NewGuid().ToString("N")[..6];

    private NatTopology() { }

    /// <summary>The public namespace (coordinator, relay).</summary>
    public string Public => $"{Prefix}{_id}-pub";

    /// <summary>The host namespace behind router <paramref name="site"/> ('a', 'b', 'c').</summary>
    public string Host(char site) => $"{Prefix}{_id}-host{site}";

    /// <summary>Router <paramref name="site"/>'s public address.</summary>
    public static string WanAddress(char site) => $"10.200.0.{10 + site - 'a' + 1}";

    /// <summary>Why namespaces cannot be made here, or null when they can (root, <c>ip</c> and <c>nft</c> present).</summary>
    public static string? WhyUnavailable()
    {
        if (!OperatingSystem.IsLinux()) return "network namespaces need Linux";
        if (Environment.UserName != "root") return "creating network namespaces needs root (the NAT test runs in .ci/run as root)";
        foreach (var tool in new[] { "ip", "nft" })
            if (!(Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(d => File.Exists(Path.Combine(d, tool))))
                return $"'{tool}' is not installed (apt-get install iproute2 nftables)";
        return null;
    }

    /// <summary>Builds the topology (deleting leftovers of earlier runs first).</summary>
    public static NatTopology Create()
    {
        foreach (var leftover in Run("ip", "netns", "list").Split('\n').Select(l => l.Split(' ')[0]).Where(n => n.StartsWith(Prefix, StringComparison.Ordinal)))
            Run("ip", "netns", "del", leftover);
        var t = new NatTopology();
        try
        {
            t.Build();
            return t;
        }
        catch
        {
            t.Dispose();
            throw;
        }
    }

    private void Build()
    {
        Add(Public);
        In(Public, "ip", "link", "add", "br0", "type", "bridge");
        In(Public, "ip", "addr", "add", $"{CoordinatorAddress}/24", "dev", "br0");
        In(Public, "ip", "addr", "add", $"{RelayAddress}/24", "dev", "br0");
        In(Public, "ip", "link", "set", "br0", "up");
        // Relayed ports the test closes mid-job are dropped here.
        Nft(Public, "add table inet swarmtest", "add chain inet swarmtest input { type filter hook input priority 0 ; policy accept ; }");
        foreach (char site in "abc")
        {
            string router = $"{Prefix}{_id}-nat{site}", host = Host(site), lan = $"192.168.{site - 'a' + 10}";
            Add(router);
            Add(host);
            In(Public, "ip", "link", "add", $"to{site}", "type", "veth", "peer", "name", "wan0", "netns", router);
            In(Public, "ip", "link", "set", $"to{site}", "master", "br0", "up");
            In(router, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", host);
            In(router, "ip", "addr", "add", $"{WanAddress(site)}/24", "dev", "wan0");
            In(router, "ip", "addr", "add", $"{lan}.1/24", "dev", "lan0");
            In(router, "ip", "link", "set", "wan0", "up");
            In(router, "ip", "link", "set", "lan0", "up");
            In(router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1");
            In(host, "ip", "addr", "add", $"{lan}.2/24", "dev", "eth0");
            In(host, "ip", "link", "set", "eth0", "up");
            In(host, "ip", "route", "add", "default", "via", $"{lan}.1");
            string masquerade = site == 'c' ? "masquerade fully-random" : "masquerade";
            Nft(router,
                "add table ip nat",
                "add chain ip nat post { type nat hook postrouting priority 100 ; }",
                $"add rule ip nat post oifname wan0 {masquerade}",
                "add table inet filter",
                "add chain inet filter input { type filter hook input priority 0 ; policy accept ; }",
                "add chain inet filter forward { type filter hook forward priority 0 ; policy accept ; }",
                "add rule inet filter input iifname wan0 ct state new drop",
                "add rule inet filter forward iifname wan0 ct state new drop");
        }
    }

    /// <summary>From now on the public namespace drops every UDP datagram to <paramref name="ports"/> (kills a relayed path).</summary>
    public void DropUdpTo(params int[] ports) =>
        Nft(Public, $"add rule inet swarmtest input udp dport {{ {string.Join(", ", ports)} }} drop");

    /// <summary>Lifts every drop <see cref="DropUdpTo"/> added (the next test starts with every path open).</summary>
    public void OpenAllPorts() => Nft(Public, "flush chain inet swarmtest input");

    private void Add(string ns)
    {
        Run("ip", "netns", "add", ns);
        _namespaces.Add(ns);
        In(ns, "ip", "link", "set", "lo", "up");
    }

    private static void Nft(string ns, params string[] commands)
    {
        foreach (var c in commands) In(ns, ["nft", .. SplitNft(c)]);
    }

    // nft takes the command as separate words; braces and semicolons stay words of their own.
    private static string[] SplitNft(string command) => command.Split(' ', StringSplitOptions.RemoveEmptyEntries);

    private static void In(string ns, params string[] command) => Run("ip", ["netns", "exec", ns, .. command]);

    private static string Run(string exe, params string[] args)
    {
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd(), stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{exe} {string.Join(' ', args)} failed ({p.ExitCode}): {stderr.Trim()}");
        return stdout;
    }

    /// <summary>Deletes every namespace of the topology (their interfaces, addresses and rules go with them).</summary>
    public void Dispose()
    {
        foreach (var ns in Enumerable.Reverse(_namespaces))
        {
            try { Run("ip", "netns", "del", ns); }
            catch (InvalidOperationException) { } // already gone
        }
        _namespaces.Clear();
    }
}

/// <summary>
/// One <see cref="NatTopology"/> shared by the tests of a class (created at first use, deleted after the last test), so
/// each test starts its own swarm in it without building the namespaces again.
/// </summary>
public sealed class NatTopologyFixture : IDisposable
{
    private NatTopology? _topology;

    /// <summary>The topology, built on first use, with every port open.</summary>
    internal NatTopology Topology
    {
        get
        {
            _topology ??= NatTopology.Create();
            _topology.OpenAllPorts();
            return _topology;
        }
    }

    /// <summary>Deletes the namespaces.</summary>
    public void Dispose() => _topology?.Dispose();
}

/// <summary>A fact that needs network namespaces: skipped, with the reason, where they cannot be created.</summary>
internal sealed class NamespaceFactAttribute : FactAttribute
{
    public NamespaceFactAttribute()
    {
        if (NatTopology.WhyUnavailable() is { } why) Skip = why;
    }
}
