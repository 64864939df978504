using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Swarm.Coordinator.Security;
using Xunit;

namespace Swarm.Tests.Security;

/// <summary>
/// The coordinator's certificate files (<see cref="TlsServerCertificate"/>) served by a real Kestrel, and how its
/// clients (<see cref="CoordinatorHttpClient"/>, <c>--cacert</c>) decide to trust it — over real TLS on 127.0.0.1.
/// </summary>
public sealed class TlsCertificateTests : IDisposable
{
    private readonly TestPki _pki = TestPki.Create();

    public void Dispose() => _pki.Dispose();

    private static async Task<(WebApplication App, string Url)> ServeAsync(TlsServerCertificate certificate)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrelHttpsConfiguration();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.UseHttps(certificate.ToKestrelOptions())));
        var app = builder.Build();
        app.MapGet("/hello", () => Results.Text("hello"));
        await app.StartAsync();
        string url = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        return (app, url.TrimEnd('/'));
    }

    private static async Task<string> GetAsync(string url, string? caCert)
    {
        using var client = CoordinatorHttpClient.Create(new CoordinatorClientCredentials(null, caCert), TimeSpan.FromSeconds(10));
        try
        {
            return await client.Http.GetStringAsync(url);
        }
        catch (HttpRequestException e)
        {
            return "failed: " + client.Explain(e);
        }
    }

    [Fact]
    public async Task Client_TrustsTheCaOfCacert_AndTheServerCertificateItself()
    {
        var (app, url) = await ServeAsync(TlsServerCertificate.Load(_pki.ServerCertFile, _pki.ServerKeyFile));
        await using var _ = app;
        Assert.StartsWith("https://127.0.0.1:", url);

        Assert.Equal("hello", await GetAsync(url + "/hello", _pki.CaCertFile));
        // The server's own certificate as the trust anchor works too (pinning it).
        Assert.Equal("hello", await GetAsync(url + "/hello", _pki.ServerCertFile));
        // localhost is in the certificate as well.
        Assert.Equal("hello", await GetAsync(url.Replace("127.0.0.1", "localhost") + "/hello", _pki.CaCertFile));
    }

    [Fact]
    public async Task Client_RefusesWithoutTheCa_WithAnotherCa_AndForAnotherName()
    {
        using var other = TestPki.Create("Some Other CA");
        using var wrongName = TestPki.Create("Swarm Test CA", "coordinator.example.org");
        var (app, url) = await ServeAsync(TlsServerCertificate.Load(_pki.ServerCertFile, _pki.ServerKeyFile));
        await using var _ = app;

        string none = await GetAsync(url + "/hello", null);
        Assert.StartsWith("failed: the certificate (CN=swarm-coordinator, issued by CN=Swarm Test CA) is not trusted (", none);
        Assert.Contains("--cacert", none);

        string otherCa = await GetAsync(url + "/hello", other.CaCertFile);
        Assert.StartsWith("failed: the certificate (CN=swarm-coordinator, issued by CN=Swarm Test CA) is not trusted: ", otherCa);
        Assert.Contains($"does not chain to a certificate in --cacert {other.CaCertFile}", otherCa);

        var (wrongApp, wrongUrl) = await ServeAsync(TlsServerCertificate.Load(wrongName.ServerCertFile, wrongName.ServerKeyFile));
        await using var __ = wrongApp;
        string name = await GetAsync(wrongUrl.Replace("127.0.0.1", "localhost") + "/hello", wrongName.CaCertFile);
        Assert.Equal("failed: the certificate (CN=swarm-coordinator) is not issued for localhost", name);
    }

    [Fact]
    public void Load_WrongFiles_FailWithOneLineNamingTheFlag()
    {
        using var other = TestPki.Create("Some Other CA");
        string missing = Path.Combine(_pki.Folder, "missing.pem");

        Assert.Equal($"--tls-cert: file not found: {missing}", Fails(missing, _pki.ServerKeyFile));
        Assert.Equal($"--tls-key: {_pki.Folder} is a folder, not a PEM file", Fails(_pki.ServerCertFile, _pki.Folder));
        Assert.Equal($"--tls-key: {other.ServerKeyFile} is not the private key of the certificate in --tls-cert {_pki.ServerCertFile}",
            Fails(_pki.ServerCertFile, other.ServerKeyFile));
        Assert.Equal($"--tls-cert: {_pki.ServerKeyFile} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", Fails(_pki.ServerKeyFile, _pki.ServerKeyFile));
        Assert.Equal($"--tls-key: {_pki.ServerCertFile} holds no PEM private key (-----BEGIN PRIVATE KEY-----)", Fails(_pki.ServerCertFile, _pki.ServerCertFile));

        var later = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow.AddDays(3));
        var expired = Assert.Throws<CommandFailedException>(() => TlsServerCertificate.Load(_pki.ServerCertFile, _pki.ServerKeyFile, later));
        Assert.Contains("expired on", expired.Message);
    }

    private static string Fails(string cert, string key)
    {
        var e = Assert.Throws<CommandFailedException>(() => TlsServerCertificate.Load(cert, key));
        Assert.DoesNotContain('\n', e.Message);
        return e.Message;
    }
}
