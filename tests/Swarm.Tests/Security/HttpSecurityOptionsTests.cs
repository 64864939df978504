using System.CommandLine;
using Swarm.Coordinator.Service;
using Swarm.Tests.Presets;
using Xunit;

namespace Swarm.Tests.Security;

/// <summary>The coordinator's HTTP security settings: how they bind (flags, file) and what start-up refuses.</summary>
public sealed class HttpSecurityOptionsTests
{
    private const string Key = "0123456789abcdef0123";

    private static CoordinatorOptions Options(string http, params string[] keys) =>
        new() { Model = Path.GetTempPath(), Http = http, ApiKeys = [.. keys] };

    [Fact]
    public void NonLoopbackHttp_WithoutApiKey_IsRefusedNamingTheFlag()
    {
        var errors = Options("0.0.0.0:8080").Validate();
        Assert.Contains(errors, e => e.Contains("--http 0.0.0.0:8080") && e.Contains("--api-key") && e.Contains("SWARM_API_KEYS"));
        Assert.DoesNotContain(Options("0.0.0.0:8080", Key).Validate(), e => e.Contains("--api-key"));
        Assert.DoesNotContain(Options("127.0.0.1:8080").Validate(), e => e.Contains("--api-key"));
    }

    [Fact]
    public void ShortOrUnprintableKeys_AreRefused_WithoutShowingThem()
    {
        var errors = Options("127.0.0.1:8080", "short-key", Key).Validate();
        string error = Assert.Single(errors, e => e.Contains("--api-key"));
        Assert.Contains("1 of 2 keys", error);
        Assert.DoesNotContain("short-key", string.Join("\n", errors));
        Assert.Contains(Options("127.0.0.1:8080", "spaces in the key 0123").Validate(), e => e.Contains("printable"));
        Assert.Contains(new CoordinatorOptions { Model = Path.GetTempPath(), MetricsKey = "m" }.Validate(), e => e.Contains("--metrics-key"));
    }

    [Fact]
    public void TlsCertAndKey_GoTogether()
    {
        Assert.Contains(new CoordinatorOptions { Model = Path.GetTempPath(), TlsCert = "c.pem" }.Validate(), e => e.Contains("--tls-cert FILE and --tls-key FILE"));
        Assert.Contains(new CoordinatorOptions { Model = Path.GetTempPath(), TlsKey = "k.pem" }.Validate(), e => e.Contains("--tls-cert FILE and --tls-key FILE"));
        // Both set: the files are read (and checked) at start, not here.
        Assert.DoesNotContain(new CoordinatorOptions { Model = Path.GetTempPath(), TlsCert = "c.pem", TlsKey = "k.pem" }.Validate(), e => e.Contains("--tls"));
    }

    private static CoordinatorOptions Bind(params string[] args)
    {
        var cfg = new DaemonConfig("Coordinator");
        cfg.ListFlag("--api-key", "ApiKeys", "keys", shorthandEnv: "API_KEYS");
        cfg.Flag<string>("--metrics-key", "MetricsKey", "metrics key");
        var cmd = new Command("coordinator");
        cfg.AddTo(cmd);
        var parsed = cmd.Parse(args);
        Assert.Empty(parsed.Errors);
        return cfg.Bind<CoordinatorOptions>(parsed);
    }

    [Fact]
    public void ApiKeyFlag_IsRepeatable()
    {
        Assert.Equal(["k1", "k2"], Bind("--api-key", "k1", "--api-key", "k2").ApiKeys);
        Assert.Empty(Bind().ApiKeys);
    }

    [Fact]
    public void ConfigFile_TakesAnArrayOrACommaSeparatedString_AndFlagsWin()
    {
        using var tmp = new TempDir();
        string array = tmp.Sub("array.json"), text = tmp.Sub("text.json");
        File.WriteAllText(array, """{"Coordinator":{"ApiKeys":["file-1","file-2"],"MetricsKey":"m-key"}}""");
        File.WriteAllText(text, """{"Coordinator":{"ApiKeys":"file-1, file-2,"}}""");

        var fromArray = Bind("--config", array);
        Assert.Equal(["file-1", "file-2"], fromArray.ApiKeys);
        Assert.Equal("m-key", fromArray.MetricsKey);
        Assert.Equal(["file-1", "file-2"], Bind("--config", text).ApiKeys);
        Assert.Equal(["flag"], Bind("--config", array, "--api-key", "flag").ApiKeys);
    }
}
