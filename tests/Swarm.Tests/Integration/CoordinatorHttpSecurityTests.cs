using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using Swarm.Coordinator.Service;
using Swarm.Tests.Model;
using Swarm.Tests.Security;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Integration;

/// <summary>
/// The coordinator program alone (no nodes): API keys from <c>SWARM_API_KEYS</c>, <c>/metrics</c> open without a
/// metrics key, and the start-up refusals — HTTP beyond loopback without a key, unusable TLS files.
/// </summary>
[Collection("processes")]
public sealed class CoordinatorHttpSecurityTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(90);
    private static string TinyModel => Path.Combine(Fixture.Root, Fixture.Tiny, "checkpoint");

    [Fact]
    public async Task KeysFromSwarmApiKeys_GuardTheApi_AndMetricsStayOpenWithoutAMetricsKey()
    {
        const string one = "env-key-one-0123456789abcdef", two = "env-key-two-0123456789abcdef";
        string ready = Path.Combine(Path.GetTempPath(), $"swarm-ready-{Guid.NewGuid():N}.json");
        await using var coordinator = CliProcess.Start(SwarmProgram.Coordinator, new Dictionary<string, string> { ["SWARM_API_KEYS"] = $"{one}, {two}" },
            "--model", TinyModel, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--ready-file", ready);
        try
        {
            var sw = Stopwatch.StartNew();
            while (!File.Exists(ready) && sw.Elapsed < Timeout)
            {
                Assert.False(coordinator.HasExited, coordinator.Output);
                await Task.Delay(50);
            }
            string url = CoordinatorEndpoints.Read(ready).Http;
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };

            async Task<HttpStatusCode> GetAsync(string path, string? key)
            {
                using var request = new HttpRequestMessage(HttpMethod.Get, url + path);
                if (key is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
                using var response = await http.SendAsync(request);
                output.WriteLine($"GET {path} [{(key is null ? "no key" : key[..11])}] → {(int)response.StatusCode}");
                return response.StatusCode;
            }

            Assert.Equal(HttpStatusCode.Unauthorized, await GetAsync("/api/swarm", null));
            Assert.Equal(HttpStatusCode.OK, await GetAsync("/api/swarm", two));
            Assert.Equal(HttpStatusCode.OK, await GetAsync("/v1/models", one));
            Assert.Equal(HttpStatusCode.Unauthorized, await GetAsync("/v1/models", "env-key-three-0123456789abcdef"));
            Assert.Equal(HttpStatusCode.OK, await GetAsync("/metrics", null));
            Assert.Equal(HttpStatusCode.OK, await GetAsync("/healthz", null));
            Assert.Contains("requires one of 2 API keys", coordinator.Output);
            Assert.Contains("refused HTTP GET /api/swarm from 127.0.0.1: missing key", coordinator.Output);
            Assert.DoesNotContain(one, coordinator.Output);
        }
        finally
        {
            File.Delete(ready);
        }
    }

    [Fact]
    public async Task HttpBeyondLoopback_WithoutApiKey_RefusesToStart()
    {
        var (exit, stdout, stderr) = await CliProcess.RunAsync(SwarmProgram.Coordinator, Timeout,
            "--model", TinyModel, "--listen", "127.0.0.1:0", "--http", "0.0.0.0:0", "--secret", "a-swarm-secret");
        output.WriteLine($"exit {exit}\n{stdout}{stderr}");
        Assert.Equal(2, exit);
        Assert.Contains("--http 0.0.0.0:0 is not a loopback address: an API key is required (--api-key KEY or SWARM_API_KEYS)", stderr);
        Assert.DoesNotContain("   at ", stdout + stderr);
    }

    [Theory]
    [InlineData("missing")]
    [InlineData("mismatched")]
    public async Task UnusableTlsFiles_ExitOneWithOneLine(string problem)
    {
        using var pki = TestPki.Create();
        using var other = TestPki.Create("Some Other CA");
        string cert = problem == "missing" ? Path.Combine(pki.Folder, "nope.pem") : pki.ServerCertFile;
        string key = problem == "missing" ? pki.ServerKeyFile : other.ServerKeyFile;

        var (exit, stdout, stderr) = await CliProcess.RunAsync(SwarmProgram.Coordinator, Timeout,
            "--model", TinyModel, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key);
        output.WriteLine($"exit {exit}\n{stdout}{stderr}");

        Assert.Equal(1, exit);
        string line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.EndsWith(problem == "missing" ? $": --tls-cert: file not found: {cert}"
            : $": --tls-key: {key} is not the private key of the certificate in --tls-cert {cert}", line);
        Assert.DoesNotContain("Exception", stdout + stderr);
    }
}
