using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Swarm.Model;
using Swarm.Tests.Model;
using Swarm.Tests.Presets;
using Swarm.Weights;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Weights;

/// <summary>
/// Bad sources and bad disks give one clear error that says what and where, and never leave a checkpoint folder
/// built from partial or unverified bytes.
/// </summary>
public sealed class StagePullErrorTests(ITestOutputHelper output) : IDisposable
{
    private const string Repo = "EleutherAI/pythia-test";
    private const string Revision = "main";
    private readonly TempDir _tmp = new();
    private readonly HttpClient _http = HttpRangeReader.CreateHttpClient();

    private string OutDir => _tmp.Sub("pulled");
    private string Weights => Path.Combine(OutDir, "model.safetensors");

    private StageCheckpointPuller Puller(string cache = "cache") => new(new HttpRangeReader(_http), new WeightCache(_tmp.Sub(cache)));

    private StagePullRequest Request(string url, int a = 1, int b = 3, int parallelism = 4) =>
        new() { Source = ModelSource.Parse(url, Revision), Start = a, End = b, OutDir = OutDir, Parallelism = parallelism };

    private async Task<TException> PullFails<TException>(StagePullRequest request, string cache = "cache") where TException : Exception
    {
        var e = await Assert.ThrowsAsync<TException>(() => Puller(cache).PullAsync(request));
        output.WriteLine(e.Message);
        Assert.False(File.Exists(Weights), "a checkpoint was written anyway");
        return e;
    }

    [Fact]
    public async Task UnreachableHost_SaysWhichHost()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop(); // nothing listens there now: connection refused
        var e = await PullFails<WeightFetchException>(Request($"http://127.0.0.1:{port}/{Repo}"));
        Assert.Contains($"cannot reach 127.0.0.1:{port}", e.Message);
    }

    [Fact]
    public async Task MissingRepository_Is404WithTheUrl()
    {
        await using var server = await HubTestServer.StartAsync();
        var e = await PullFails<WeightFetchException>(Request(server.RepoUrl("EleutherAI/no-such-model")));
        Assert.Contains("HTTP 404", e.Message);
        Assert.Contains($"{server.BaseUrl}/EleutherAI/no-such-model/resolve/main/config.json", e.Message);
    }

    [Fact]
    public async Task RevisionWithoutSafetensors_SaysSo()
    {
        await using var server = await HubTestServer.StartAsync();
        using var fx = new Fixture(Fixture.Tiny);
        server.AddFile(Repo, Revision, "config.json", File.ReadAllBytes(Path.Combine(fx.CheckpointDir, "config.json")));
        var e = await PullFails<WeightFetchException>(Request(server.RepoUrl(Repo)));
        Assert.Contains("no model.safetensors or model.safetensors.index.json", e.Message);
    }

    [Fact]
    public async Task ServerWithoutRangeSupport_IsRefused()
    {
        await using var server = await HubTestServer.StartAsync();
        using var fx = new Fixture(Fixture.Tiny);
        server.AddFolder(Repo, Revision, fx.CheckpointDir);
        server.IgnoreRange = true;
        var e = await PullFails<WeightFetchException>(Request(server.RepoUrl(Repo)));
        Assert.Contains("ignored the Range request", e.Message);
        Assert.Contains("model.safetensors", e.Message);
    }

    [Fact]
    public async Task TruncatedBody_FailsNamingTheTensor_AndTheKeptBytesAreOnlyResumed()
    {
        await using var server = await HubTestServer.StartAsync();
        using var fx = new Fixture(Fixture.Small);
        server.AddFolder(Repo, Revision, fx.CheckpointDir);
        server.TruncateData = true;
        var request = Request(server.RepoUrl(Repo), 2, 3, parallelism: 1);
        var e = await PullFails<WeightFetchException>(request);
        Assert.Contains("truncated response", e.Message);
        Assert.Matches("tensor 'gpt_neox\\.layers\\.2\\.[a-z_.0-9]+'", e.Message);

        // The half that arrived is kept as a partial download, never used as a tensor: a good server completes it.
        long firstRun = server.DataBytesServed;
        server.TruncateData = false;
        server.ResetCounters();
        var result = await Puller().PullAsync(request);
        var all = WeightTestData.Tensors(fx.CheckpointDir);
        long total = NeoXTensorNames.ForStage(ModelConfig.Load(fx.CheckpointDir), 2, 3).Sum(n => all[n].Length);
        Assert.Equal(total - firstRun, server.DataBytesServed);
        WeightTestData.AssertSameStageOutput(fx.CheckpointDir, result.Directory, 2, 3);
    }

    public static TheoryData<string, string> LyingHeaders() => new()
    {
        { "outside", "ends at byte" },
        { "overlap", "overlap" },
        { "length", "declared header length" },
    };

    [Theory]
    [MemberData(nameof(LyingHeaders))]
    public async Task HeaderThatLies_IsRefusedWithTheFileAndTensor(string lie, string expected)
    {
        await using var server = await HubTestServer.StartAsync();
        using var fx = new Fixture(Fixture.Tiny);
        server.AddFolder(Repo, Revision, fx.CheckpointDir);
        byte[] file = File.ReadAllBytes(Path.Combine(fx.CheckpointDir, "model.safetensors"));
        const string name = "gpt_neox.layers.0.input_layernorm.bias";
        byte[] lying = lie switch
        {
            // same size, but placed past the end of the file
            "outside" => WeightTestData.RewriteHeader(file, h => h[name]!["data_offsets"] = new JsonArray(file.Length, file.Length + 256)),
            // the bias claims the weight's bytes
            "overlap" => WeightTestData.RewriteHeader(file, h => h[name]!["data_offsets"] = h["gpt_neox.layers.0.input_layernorm.weight"]!["data_offsets"]!.DeepClone()),
            _ => WithLength(file, 1L << 40),
        };
        server.AddFile(Repo, Revision, "model.safetensors", lying);
        var e = await PullFails<CheckpointException>(Request(server.RepoUrl(Repo)));
        Assert.Contains($"{server.RepoUrl(Repo)}/resolve/main/model.safetensors", e.Message);
        Assert.Contains(expected, e.Message);
        if (lie != "length") Assert.Contains($"'{name}'", e.Message);

        static byte[] WithLength(byte[] file, long length)
        {
            var copy = (byte[])file.Clone();
            BitConverter.TryWriteBytes(copy.AsSpan(0, 8), length);
            return copy;
        }
    }

    [Fact]
    public async Task DiskFull_InTheCacheOrTheOutput_IsAClearErrorAndLeavesNoCheckpoint()
    {
        Assert.True(File.Exists("/dev/full"), "this test needs Linux's /dev/full");
        await using var server = await HubTestServer.StartAsync();
        using var fx = new Fixture(Fixture.Tiny);
        server.AddFolder(Repo, Revision, fx.CheckpointDir);
        var request = Request(server.RepoUrl(Repo), 1, 2, parallelism: 1); // one file on /dev/full open at a time
        var cache = new WeightCache(_tmp.Sub("cache"));
        var names = NeoXTensorNames.ForStage(ModelConfig.Load(fx.CheckpointDir), 1, 2).ToList();

        // Every partial download is a file on a full disk.
        foreach (var n in names)
        {
            string partial = cache.PartialPath(request.Source.Key, n);
            Directory.CreateDirectory(Path.GetDirectoryName(partial)!);
            File.CreateSymbolicLink(partial, "/dev/full");
        }
        var e = await PullFails<WeightFetchException>(request);
        Assert.Contains("No space left on device", e.Message);
        Assert.Contains("disk full", e.Message);
        foreach (var n in names) File.Delete(cache.PartialPath(request.Source.Key, n));

        // The tensors fit, the checkpoint file does not.
        Directory.CreateDirectory(OutDir);
        File.CreateSymbolicLink(Weights + ".partial", "/dev/full");
        e = await PullFails<WeightFetchException>(request);
        Assert.Contains($"cannot write the checkpoint in {OutDir}", e.Message);
        Assert.False(File.Exists(Weights + ".partial"));
        Assert.False(File.Exists(Path.Combine(OutDir, "config.json")));
    }

    public void Dispose()
    {
        _http.Dispose();
        _tmp.Dispose();
    }
}
