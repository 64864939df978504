using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Swarm.Cli;
using Swarm.Coordinator.Security;
using Swarm.Tests.Model;
using Swarm.Tests.Security;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Integration;

/// <summary>
/// A 1-node swarm (real processes) on the tiny fixture whose coordinator serves HTTPS with a certificate made for the
/// test and asks for one of two API keys, and for a separate metrics key on <c>/metrics</c>.
/// </summary>
public sealed class HttpsSwarmFixture : IAsyncLifetime
{
    /// <summary>The coordinator's API keys.</summary>
    public static readonly string[] ApiKeys = ["api-key-one-0123456789abcdef", "api-key-two-fedcba9876543210"];

    /// <summary>The coordinator's metrics key.</summary>
    public const string MetricsKey = "metrics-key-00112233445566778899";

    internal LocalSwarm Swarm { get; private set; } = null!;
    internal Fixture Fx { get; } = new(Fixture.Tiny);
    internal TestPki Pki { get; } = TestPki.Create();

    /// <summary>Another CA, which signed nothing the coordinator serves.</summary>
    internal TestPki OtherPki { get; } = TestPki.Create("Some Other CA");

    public async Task InitializeAsync() =>
        Swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
        {
            Model = Fx.CheckpointDir, Nodes = 1, Layers = ["0:4"], WireDtype = "f32", ThreadsPerNode = 1,
            ApiKeys = ApiKeys, MetricsKey = MetricsKey, TlsCert = Pki.ServerCertFile, TlsKey = Pki.ServerKeyFile, CaCert = Pki.CaCertFile,
        });

    public async Task DisposeAsync()
    {
        await Swarm.DisposeAsync();
        Fx.Dispose();
        Pki.Dispose();
        OtherPki.Dispose();
    }
}

/// <summary>
/// Build item 5 of issue 13 against the real programs: the API keys, the metrics key and HTTPS, checked with .NET's
/// client, with <c>curl --cacert</c> and with <c>swarm generate</c>/<c>swarm status</c>.
/// </summary>
[Collection("processes")]
public sealed class HttpsSwarmTests(HttpsSwarmFixture swarm, ITestOutputHelper output) : IClassFixture<HttpsSwarmFixture>
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(90);
    private string Url => swarm.Swarm.HttpUrl;
    private string PromptIds => string.Join(',', swarm.Fx.Ids("prompt.1"));
    private long[] Greedy(int n) => swarm.Fx.Ids("greedy.1")[..n];

    private async Task<(HttpStatusCode Status, string Body, HttpResponseMessage Response)> SendAsync(string method, string path, string? authorization)
    {
        using var client = CoordinatorHttpClient.Create(new CoordinatorClientCredentials(null, swarm.Pki.CaCertFile), TimeSpan.FromMinutes(2));
        using var request = new HttpRequestMessage(new HttpMethod(method), Url + path);
        if (authorization is not null) request.Headers.TryAddWithoutValidation("Authorization", authorization);
        if (method == "POST")
            request.Content = new StringContent($$"""{"prompt":[{{PromptIds}}],"max_tokens":4,"temperature":0}""", Encoding.UTF8, "application/json");
        var response = await client.Http.SendAsync(request);
        string body = await response.Content.ReadAsStringAsync();
        output.WriteLine($"{method} {path} [{authorization ?? "no key"}] → {(int)response.StatusCode} {(body.Length > 200 ? body[..200] + "…" : body)}");
        return (response.StatusCode, body, response);
    }

    [Theory]
    [InlineData("POST", "/v1/completions")]
    [InlineData("GET", "/v1/models")]
    [InlineData("GET", "/v1/models/neox-tiny")]
    [InlineData("GET", "/api/swarm")]
    [InlineData("POST", "/v1/embeddings")] // unknown URLs are guarded too: no probing without a key
    [InlineData("GET", "/V1/Models")] // routing ignores case; so does the guard
    public async Task NoKeyOrWrongKey_Gets401InOpenAiShape_WithWwwAuthenticate(string method, string path)
    {
        foreach (var (authorization, code) in new (string?, string)[]
        {
            (null, "missing_api_key"),
            ("Bearer wrong-key-0123456789abcdef", "invalid_api_key"),
            ($"Bearer {HttpsSwarmFixture.MetricsKey}", "invalid_api_key"), // the metrics key opens /metrics only
            ($"Basic {HttpsSwarmFixture.ApiKeys[0]}", "invalid_authorization_header"),
        })
        {
            var (status, body, response) = await SendAsync(method, path, authorization);
            Assert.Equal(HttpStatusCode.Unauthorized, status);
            Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
            Assert.StartsWith("Bearer", response.Headers.WwwAuthenticate.ToString());
            var error = JsonNode.Parse(body)!["error"]!;
            Assert.Equal(["message", "type", "param", "code"], error.AsObject().Select(p => p.Key));
            Assert.Equal("invalid_request_error", (string?)error["type"]);
            Assert.Equal(code, (string?)error["code"]);
            Assert.DoesNotContain("wrong-key", body); // a presented key is never echoed
        }
    }

    [Fact]
    public async Task EitherApiKey_Gets200_ForCompletionsModelsAndStatus()
    {
        foreach (string key in HttpsSwarmFixture.ApiKeys)
        {
            var (status, body, _) = await SendAsync("POST", "/v1/completions", $"Bearer {key}");
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.Equal(Greedy(4), JsonNode.Parse(body)!["choices"]![0]!["token_ids"]!.AsArray().Select(t => (long)t!));

            (status, body, _) = await SendAsync("GET", "/v1/models", $"bearer {key}"); // the scheme is case-insensitive
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.Equal("list", (string?)JsonNode.Parse(body)!["object"]);

            (status, body, _) = await SendAsync("GET", "/api/swarm", $"Bearer {key}");
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.Single(JsonNode.Parse(body)!["nodes"]!.AsArray());
        }
    }

    [Fact]
    public async Task HealthzAndTheDashboardPage_StayOpen()
    {
        var (status, body, _) = await SendAsync("GET", "/healthz", null);
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.True((bool)JsonNode.Parse(body)!["covered"]!);
        (status, body, _) = await SendAsync("GET", "/", null);
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Contains("id=\"key-prompt\"", body);
    }

    [Fact]
    public async Task Metrics_NeedTheMetricsKey_AndCountTheRefusals()
    {
        await SendAsync("GET", "/api/swarm", null); // one refusal at least, for the counter below
        Assert.Equal(HttpStatusCode.Unauthorized, (await SendAsync("GET", "/metrics", null)).Status);
        Assert.Equal(HttpStatusCode.Unauthorized, (await SendAsync("GET", "/metrics", $"Bearer {HttpsSwarmFixture.ApiKeys[0]}")).Status);
        var (status, body, _) = await SendAsync("GET", "/metrics", $"Bearer {HttpsSwarmFixture.MetricsKey}");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Contains("http_response_status_code=\"401\"", body);
    }

    [Fact]
    public async Task OfficialOpenAiJsClient_SendsItsApiKey_OverHttpsWithTheTestCa()
    {
        var checks = await OpenAiClientScript.RunAsync("auth.mjs",
            [Url, "checkpoint", HttpsSwarmFixture.ApiKeys[0], $"[{PromptIds}]"],
            new Dictionary<string, string> { ["NODE_EXTRA_CA_CERTS"] = swarm.Pki.CaCertFile }, output);

        Assert.All(checks.Values, c => Assert.True((bool)c["ok"]!, c.ToJsonString()));
        Assert.Equal(["checkpoint"], checks["auth.models.list"]["ids"]!.AsArray().Select(i => (string)i!));
        Assert.Equal(Greedy(4), checks["auth.completions"]["token_ids"]!.AsArray().Select(t => (long)t!));
        Assert.Equal(401, (int)checks["auth.wrong_key"]["status"]!);
        Assert.Equal("invalid_api_key", (string?)checks["auth.wrong_key"]["code"]);
    }

    private async Task<(int Exit, string Output)> CurlAsync(params string[] args)
    {
        var psi = new ProcessStartInfo("curl") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in new[] { "-sS", "--max-time", "60" }.Concat(args)) psi.ArgumentList.Add(a);
        using var curl = Process.Start(psi)!;
        var stdout = curl.StandardOutput.ReadToEndAsync();
        var stderr = curl.StandardError.ReadToEndAsync();
        await curl.WaitForExitAsync();
        string text = await stdout + await stderr;
        output.WriteLine($"curl {string.Join(' ', args.Select(a => a.StartsWith("Authorization", StringComparison.Ordinal) ? "Authorization: …" : a))} → exit {curl.ExitCode}: {text}");
        return (curl.ExitCode, text);
    }

    [Fact]
    public async Task Curl_WithCacertAndKey_Completes_WithoutKeyGets401_WithAnotherCaFailsTheHandshake()
    {
        string body = $$"""{"prompt":[{{PromptIds}}],"max_tokens":4,"temperature":0}""";
        string url = Url + "/v1/completions";
        Assert.StartsWith("https://127.0.0.1:", url);

        var (exit, text) = await CurlAsync("--fail-with-body", "--cacert", swarm.Pki.CaCertFile,
            "-H", $"Authorization: Bearer {HttpsSwarmFixture.ApiKeys[1]}", "-H", "Content-Type: application/json", "-d", body, url);
        Assert.Equal(0, exit);
        Assert.Equal(Greedy(4), JsonNode.Parse(text)!["choices"]![0]!["token_ids"]!.AsArray().Select(t => (long)t!));

        (exit, text) = await CurlAsync("--cacert", swarm.Pki.CaCertFile, "-o", "/dev/null", "-w", "%{http_code}",
            "-H", "Content-Type: application/json", "-d", body, url);
        Assert.Equal((0, "401"), (exit, text));

        (exit, text) = await CurlAsync("--cacert", swarm.OtherPki.CaCertFile, "-H", $"Authorization: Bearer {HttpsSwarmFixture.ApiKeys[1]}",
            "-H", "Content-Type: application/json", "-d", body, url);
        Assert.Equal(60, exit); // CURLE_PEER_FAILED_VERIFICATION
        Assert.Contains("certificate", text);
    }

    [Fact]
    public async Task SwarmGenerate_WithCacertAndApiKey_PrintsTheTokens_AndEachRefusalInOneLine()
    {
        string[] generate = ["generate", "--url", Url, "--prompt-ids", PromptIds, "--max-new-tokens", "4", "--json"];

        var (exit, stdout, stderr) = await CliProcess.RunAsync(SwarmProgram.Cli, Timeout,
            [.. generate, "--cacert", swarm.Pki.CaCertFile, "--api-key", HttpsSwarmFixture.ApiKeys[0]]);
        output.WriteLine($"with key and CA → exit {exit}: {stdout}{stderr}");
        Assert.Equal(0, exit);
        Assert.Equal(Greedy(4), JsonNode.Parse(stdout)!["token_ids"]!.AsArray().Select(t => (long)t!));

        // SWARM_API_KEY instead of the flag.
        (exit, stdout, stderr) = await CliProcess.RunAsync(SwarmProgram.Cli, Timeout,
            new Dictionary<string, string> { ["SWARM_API_KEY"] = HttpsSwarmFixture.ApiKeys[1] }, [.. generate, "--stream", "--cacert", swarm.Pki.CaCertFile]);
        output.WriteLine($"SWARM_API_KEY → exit {exit}: {stdout}{stderr}");
        Assert.Equal(0, exit);
        Assert.Equal(Greedy(4), JsonNode.Parse(stdout)!["token_ids"]!.AsArray().Select(t => (long)t!));

        string line = await FailsInOneLineAsync([.. generate, "--cacert", swarm.Pki.CaCertFile]);
        Assert.Contains("HTTP 401", line);
        Assert.Contains("--api-key", line);

        line = await FailsInOneLineAsync([.. generate, "--cacert", swarm.Pki.CaCertFile, "--api-key", "wrong-key-0123456789abcdef"]);
        Assert.Contains("HTTP 401", line);
        Assert.Contains("the key given by --api-key or SWARM_API_KEY was refused", line);

        line = await FailsInOneLineAsync([.. generate, "--cacert", swarm.OtherPki.CaCertFile, "--api-key", HttpsSwarmFixture.ApiKeys[0]]);
        Assert.Contains($"cannot connect securely to the coordinator at {Url}: the certificate (CN=swarm-coordinator, issued by CN=Swarm Test CA) is not trusted", line);
        Assert.Contains($"--cacert {swarm.OtherPki.CaCertFile}", line);

        line = await FailsInOneLineAsync([.. generate, "--api-key", HttpsSwarmFixture.ApiKeys[0]]);
        Assert.Contains("cannot connect securely", line);
        Assert.Contains("pass the CA that signed it with --cacert FILE", line);
    }

    [Fact]
    public async Task SwarmStatus_WithCacertAndApiKey_ShowsTheSwarm_WithoutKeySaysSo()
    {
        var (exit, stdout, stderr) = await CliProcess.RunAsync(SwarmProgram.Cli, Timeout,
            "status", "--url", Url, "--json", "--cacert", swarm.Pki.CaCertFile, "--api-key", HttpsSwarmFixture.ApiKeys[1]);
        output.WriteLine($"exit {exit}: {stdout}{stderr}");
        Assert.Equal(0, exit);
        Assert.Single(JsonNode.Parse(stdout)!["nodes"]!.AsArray());

        string line = await FailsInOneLineAsync(["status", "--url", Url, "--cacert", swarm.Pki.CaCertFile]);
        Assert.Contains("HTTP 401 Unauthorized", line);
        Assert.Contains("--api-key KEY or set SWARM_API_KEY", line);
    }

    /// <summary>Runs the CLI; asserts exit 1 and one line on stderr without a stack trace, and returns that line.</summary>
    private async Task<string> FailsInOneLineAsync(string[] args)
    {
        var (exit, stdout, stderr) = await CliProcess.RunAsync(SwarmProgram.Cli, Timeout, args);
        output.WriteLine($"swarm {args[0]} → exit {exit}: {stdout}{stderr}");
        Assert.Equal(1, exit);
        string line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.DoesNotContain("Exception", line);
        return line;
    }
}
