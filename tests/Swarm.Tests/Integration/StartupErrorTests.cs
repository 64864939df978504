using System.Net;
using System.Net.Sockets;
using Swarm.Model;
using Swarm.Tests.Model;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Integration;

/// <summary>
/// Start-up and run-time failures a person can act on end the real programs with exit code 1 and one line that says
/// what to fix — never a stack trace or exit 134 (an unhandled exception).
/// </summary>
[Collection("processes")]
public class StartupErrorTests(ITestOutputHelper output)
{
    private static string TinyModel => Path.Combine(Fixture.Root, Fixture.Tiny, "checkpoint");

    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(90);

    [Theory]
    [InlineData(SwarmProgram.Coordinator, "udp")]
    [InlineData(SwarmProgram.Coordinator, "http")]
    [InlineData(SwarmProgram.Cli, "udp")]
    [InlineData(SwarmProgram.Cli, "http")]
    public async Task Coordinator_PortInUse_ExitsOneWithOneLineNamingTheAddress(SwarmProgram program, string busy)
    {
        using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        udp.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var tcp = new TcpListener(IPAddress.Loopback, 0);
        tcp.Start();
        using var free = ReservedPort.Take();
        try
        {
            string listen = $"127.0.0.1:{(busy == "udp" ? ((IPEndPoint)udp.LocalEndPoint!).Port : free.Port)}";
            string http = $"127.0.0.1:{(busy == "http" ? ((IPEndPoint)tcp.LocalEndpoint).Port : free.Port)}";
            string[] args = ["--model", TinyModel, "--listen", listen, "--http", http];
            if (program == SwarmProgram.Cli) args = ["coordinator", .. args];

            var (exit, stdout, stderr) = await CliProcess.RunAsync(program, Timeout, args);
            output.WriteLine($"exit {exit}\nstdout:\n{stdout}\nstderr:\n{stderr}");

            Assert.Equal(1, exit);
            string line = Assert.Single(Lines(stderr));
            Assert.Contains(busy == "udp" ? listen : http, line);
            Assert.Contains("already in use", line);
            Assert.Contains(busy == "udp" ? "--listen" : "--http", line);
            AssertNoStackTrace(stdout + stderr);
        }
        finally
        {
            tcp.Stop();
        }
    }

    [Fact]
    public async Task Generate_CoordinatorUnreachable_ExitsOneNotTwo()
    {
        using var nobody = ReservedPort.Take();
        string url = $"http://127.0.0.1:{nobody.Port}";
        var (exit, stdout, stderr) = await CliProcess.RunAsync(SwarmProgram.Cli, Timeout, "generate", "--url", url, "--prompt-ids", "1,2,3");
        output.WriteLine($"exit {exit}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        Assert.Equal(1, exit);
        Assert.Contains(url, Assert.Single(Lines(stderr)));
        AssertNoStackTrace(stdout + stderr);
    }

    [Theory]
    [InlineData("1B")]
    [InlineData("1MB")]
    public async Task Node_MemoryTooSmallForOneLayer_SaysTheMinimumAndExitsOne(string memory)
    {
        long minimum = LayerMemory.MinimumNodeBudgetBytes(ModelConfig.Load(TinyModel));
        // Nothing listens at the coordinator address: the node must fail before it tries to register.
        using var nobody = ReservedPort.Take();
        string coordinator = $"127.0.0.1:{nobody.Port}";
        var (exit, stdout, stderr) = await CliProcess.RunAsync(SwarmProgram.Cli, Timeout,
            "node", "--coordinator", coordinator, "--model", TinyModel, "--memory", memory);
        output.WriteLine($"exit {exit}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        Assert.Equal(1, exit);
        string line = Assert.Single(Lines(stderr));
        Assert.Contains("--memory", line);
        Assert.Contains(minimum.ToString("N0", System.Globalization.CultureInfo.InvariantCulture) + " bytes", line, StringComparison.Ordinal);
        AssertNoStackTrace(stdout + stderr);
    }

    private static string[] Lines(string text) =>
        text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    private static void AssertNoStackTrace(string text)
    {
        Assert.DoesNotContain("   at ", text, StringComparison.Ordinal);
        Assert.DoesNotContain("Unhandled exception", text, StringComparison.Ordinal);
        Assert.DoesNotContain("Exception", text, StringComparison.Ordinal);
    }
}
