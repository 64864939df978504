using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Swarm.Tests.Security;

/// <summary>
/// A throw-away PKI made for one test: a self-signed CA and a server certificate it signed for 127.0.0.1 and
/// localhost (or the names given), written as PEM files — the CA's certificate, the server's certificate and its
/// PKCS#8 private key — into a folder deleted on dispose.
/// </summary>
internal sealed class TestPki : IDisposable
{
    private TestPki(string folder) => Folder = folder;

    /// <summary>Where the files are.</summary>
    public string Folder { get; }

    /// <summary>The CA's certificate (PEM): what a client passes as <c>--cacert</c>.</summary>
    public string CaCertFile => Path.Combine(Folder, "ca.pem");

    /// <summary>The server's certificate (PEM): <c>--tls-cert</c>.</summary>
    public string ServerCertFile => Path.Combine(Folder, "server.pem");

    /// <summary>The server's private key (PKCS#8 PEM): <c>--tls-key</c>.</summary>
    public string ServerKeyFile => Path.Combine(Folder, "server.key");

    /// <summary>Creates the CA and a server certificate for <paramref name="dnsNames"/> (default localhost) and 127.0.0.1.</summary>
    public static TestPki Create(string caName = "Swarm Test CA", params string[] dnsNames)
    {
        var pki = new TestPki(Path.Combine(Path.GetTempPath(), "swarm-pki-" + Guid.NewGuid().ToString("N")));
        Directory.CreateDirectory(pki.Folder);
        var now = DateTimeOffset.UtcNow;
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest($"CN={caName}", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        caRequest.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(caRequest.PublicKey, false));
        using var ca = caRequest.CreateSelfSigned(now.AddHours(-1), now.AddDays(2));

        using var serverKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=swarm-coordinator", serverKey, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, true, false));
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        foreach (string dns in dnsNames.Length == 0 ? ["localhost"] : dnsNames) names.AddDnsName(dns);
        request.CertificateExtensions.Add(names.Build());
        byte[] serial = RandomNumberGenerator.GetBytes(16);
        serial[0] &= 0x7f;
        using var server = request.Create(ca, now.AddHours(-1), now.AddDays(1), serial);

        File.WriteAllText(pki.CaCertFile, ca.ExportCertificatePem());
        File.WriteAllText(pki.ServerCertFile, server.ExportCertificatePem());
        File.WriteAllText(pki.ServerKeyFile, serverKey.ExportPkcs8PrivateKeyPem());
        return pki;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        try { Directory.Delete(Folder, recursive: true); }
        catch (IOException) { }
    }
}
