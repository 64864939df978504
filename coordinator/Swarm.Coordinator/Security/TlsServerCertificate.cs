using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Swarm.Hosting;

namespace Swarm.Coordinator.Security;

/// <summary>
/// The certificate the coordinator serves HTTPS with, read from PEM files (<c>--tls-cert</c>: the leaf first, then any
/// intermediates; <c>--tls-key</c>: its private key). Every problem — a missing or unreadable file, no PEM in it, a key
/// that is not the certificate's, a certificate outside its validity — ends start-up with one line naming the flag.
/// </summary>
internal sealed class TlsServerCertificate
{
    private TlsServerCertificate(X509Certificate2 certificate, X509Certificate2Collection chain)
    {
        Certificate = certificate;
        Chain = chain;
    }

    /// <summary>The leaf, with its private key.</summary>
    public X509Certificate2 Certificate { get; }

    /// <summary>Intermediates sent after the leaf (may be empty).</summary>
    public X509Certificate2Collection Chain { get; }

    /// <summary>"CN=…, valid until …, SHA-256 …" for the start-up log.</summary>
    public string Describe() =>
        $"{Certificate.Subject}, valid until {Certificate.NotAfter.ToUniversalTime():yyyy-MM-dd HH:mm} UTC, SHA-256 {Certificate.GetCertHashString(HashAlgorithmName.SHA256)}";

    /// <summary>Kestrel's HTTPS settings for this certificate.</summary>
    public HttpsConnectionAdapterOptions ToKestrelOptions() => new() { ServerCertificate = Certificate, ServerCertificateChain = Chain };

    /// <summary>Reads and checks the pair.</summary>
    /// <exception cref="CommandFailedException">Anything wrong with either file, in one line.</exception>
    public static TlsServerCertificate Load(string certFile, string keyFile, TimeProvider? time = null)
    {
        string certPem = ReadPem(certFile, "--tls-cert");
        string keyPem = ReadPem(keyFile, "--tls-key");
        if (!HasLabel(certPem, l => l == "CERTIFICATE"))
            throw new CommandFailedException($"--tls-cert: {certFile} holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
        if (!HasLabel(keyPem, l => l.EndsWith("PRIVATE KEY", StringComparison.Ordinal)))
            throw new CommandFailedException($"--tls-key: {keyFile} holds no PEM private key (-----BEGIN PRIVATE KEY-----)");
        if (HasLabel(keyPem, l => l == "ENCRYPTED PRIVATE KEY"))
            throw new CommandFailedException($"--tls-key: {keyFile} is encrypted; give the key unencrypted (e.g. `openssl pkey -in {keyFile} -out key.pem`) in a file only the coordinator's user can read");
        X509Certificate2 leaf;
        try
        {
            leaf = X509Certificate2.CreateFromPem(certPem, keyPem);
        }
        catch (ArgumentException)
        {
            throw new CommandFailedException($"--tls-key: {keyFile} is not the private key of the certificate in --tls-cert {certFile}");
        }
        catch (CryptographicException e)
        {
            throw new CommandFailedException($"--tls-cert/--tls-key: cannot use {certFile} with {keyFile}: {OneLine(e.Message)}");
        }
        var now = (time ?? TimeProvider.System).GetUtcNow().UtcDateTime;
        if (now > leaf.NotAfter.ToUniversalTime())
            throw new CommandFailedException($"--tls-cert: the certificate in {certFile} ({leaf.Subject}) expired on {leaf.NotAfter.ToUniversalTime():yyyy-MM-dd HH:mm} UTC");
        if (now < leaf.NotBefore.ToUniversalTime())
            throw new CommandFailedException($"--tls-cert: the certificate in {certFile} ({leaf.Subject}) is not valid before {leaf.NotBefore.ToUniversalTime():yyyy-MM-dd HH:mm} UTC (is the clock right?)");
        var all = new X509Certificate2Collection();
        all.ImportFromPem(certPem);
        var chain = new X509Certificate2Collection();
        foreach (var c in all.Skip(1)) chain.Add(c);
        all[0].Dispose();
        return new TlsServerCertificate(leaf, chain);
    }

    private static string ReadPem(string path, string flag)
    {
        if (Directory.Exists(path)) throw new CommandFailedException($"{flag}: {path} is a folder, not a PEM file");
        if (!File.Exists(path)) throw new CommandFailedException($"{flag}: file not found: {path}");
        try
        {
            return File.ReadAllText(path);
        }
        catch (UnauthorizedAccessException)
        {
            throw new CommandFailedException($"{flag}: cannot read {path}: permission denied (the coordinator runs as user '{Environment.UserName}')");
        }
        catch (IOException e)
        {
            throw new CommandFailedException($"{flag}: cannot read {path}: {OneLine(e.Message)}");
        }
    }

    private static bool HasLabel(string pem, Func<string, bool> wanted)
    {
        ReadOnlySpan<char> rest = pem;
        while (PemEncoding.TryFind(rest, out var fields))
        {
            if (wanted(rest[fields.Label].ToString())) return true;
            rest = rest[fields.Location.End..];
        }
        return false;
    }

    private static string OneLine(string text) => text.ReplaceLineEndings(" ").Trim();
}
