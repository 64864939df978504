using System.Collections.Concurrent;
using System.Net;
using Swarm.Transport;

namespace Swarm.Cli.Bench.Capacity;

/// <summary>
/// The load generator's nodes: <see cref="FakeNode"/>s, each on its own loopback address (127.10.x.y) and UDP socket,
/// registered with the coordinator a bounded number at a time. Their transports run on a few shared
/// <see cref="TransportPump"/> threads, not a poll thread each, so a thousand nodes do not starve one another of CPU and
/// miss heartbeats. Disposing closes every socket.
/// </summary>
internal sealed class FakeSwarm : IAsyncDisposable
{
    private readonly ConcurrentDictionary<int, FakeNode> _byId = new();
    private readonly List<FakeNode> _nodes = [];
    private readonly TransportPump[] _pumps = Enumerable.Range(0, Pumps).Select(i => new TransportPump($"fake-nodes-{i}")).ToArray();

    /// <summary>Threads the nodes' transports share.</summary>
    private const int Pumps = 4;

    private FakeSwarm() { }

    /// <summary>The registered nodes.</summary>
    public IReadOnlyList<FakeNode> Nodes => _nodes;

    /// <summary>Starts <paramref name="count"/> nodes and registers them with the coordinator at <paramref name="coordinator"/>.</summary>
    public static async Task<FakeSwarm> StartAsync(int count, FakeNodeProfile profile, IPEndPoint coordinator, CancellationToken ct)
    {
        var swarm = new FakeSwarm();
        try
        {
            using var gate = new SemaphoreSlim(16);
            var registrations = new List<Task>();
            for (int i = 0; i < count; i++)
            {
                var node = new FakeNode(profile, Address(i), id => swarm._byId.GetValueOrDefault(id), swarm._pumps[i % Pumps]);
                swarm._nodes.Add(node);
                string name = $"sim-{i + 1}";
                await gate.WaitAsync(ct).ConfigureAwait(false);
                registrations.Add(Task.Run(async () =>
                {
                    try
                    {
                        await node.RegisterAsync(coordinator, name, ct).ConfigureAwait(false);
                        swarm._byId[node.NodeId] = node;
                    }
                    finally { gate.Release(); }
                }, ct));
            }
            await Task.WhenAll(registrations).ConfigureAwait(false);
            return swarm;
        }
        catch
        {
            await swarm.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>127.10.x.y: a distinct loopback source address per node (Linux routes all of 127/8 to the loopback device).</summary>
    internal static IPAddress Address(int i) => new([127, 10, (byte)(i / 250), (byte)(i % 250 + 1)]);

    /// <summary>Closes every node's socket.</summary>
    public async ValueTask DisposeAsync()
    {
        foreach (var n in _nodes) await n.DisposeAsync().ConfigureAwait(false);
        _nodes.Clear();
        foreach (var pump in _pumps) pump.Dispose();
    }
}
