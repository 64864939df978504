using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Swarm.Coordinator.Security;

/// <summary>
/// How a client of the coordinator decides to trust its HTTPS certificate: the system's trust store as usual, and in
/// addition the certificates of <c>--cacert FILE</c> — a certificate there is trusted as a root (a chain is built to
/// it, with the intermediates the server sent) or, when it is the server's own certificate, as that exact certificate.
/// The host name is always checked, so is the validity period; nothing else is ever accepted. The reason of the last
/// refusal is kept for the one-line error the CLI prints.
/// </summary>
internal sealed class CoordinatorCertificateTrust
{
    private static readonly Oid s_serverAuth = new("1.3.6.1.5.5.7.3.1");
    private readonly X509Certificate2Collection _anchors;
    private readonly string? _anchorFile;

    /// <summary>Trust the system store and the certificates of <paramref name="anchorFile"/> (none when null).</summary>
    public CoordinatorCertificateTrust(X509Certificate2Collection anchors, string? anchorFile)
    {
        ArgumentNullException.ThrowIfNull(anchors);
        _anchors = anchors;
        _anchorFile = anchorFile;
    }

    /// <summary>Why the last certificate was refused (one line); null when none was.</summary>
    public string? LastRefusal { get; private set; }

    /// <summary>The validation callback for <see cref="HttpClientHandler.ServerCertificateCustomValidationCallback"/>.</summary>
    public bool Validate(HttpRequestMessage request, X509Certificate2? certificate, X509Chain? chain, SslPolicyErrors errors)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (errors == SslPolicyErrors.None) return true; // the system store trusts it and the name matches
        string host = request.RequestUri?.Host ?? "?";
        if (certificate is null || errors.HasFlag(SslPolicyErrors.RemoteCertificateNotAvailable))
            return Refuse($"{host} presented no certificate");
        if (errors.HasFlag(SslPolicyErrors.RemoteCertificateNameMismatch))
            return Refuse($"the certificate ({certificate.Subject}) is not issued for {host}");
        string systemView = chain is null ? "not trusted" : Describe(chain.ChainStatus);
        if (_anchors.Count == 0)
            return Refuse($"the certificate ({certificate.Subject}, issued by {certificate.Issuer}) is not trusted ({systemView}); pass the CA that signed it with --cacert FILE");
        if (_anchors.Any(a => a.RawDataMemory.Span.SequenceEqual(certificate.RawDataMemory.Span)) && IsCurrent(certificate))
        {
            LastRefusal = null;
            return true;
        }
        using var custom = new X509Chain();
        custom.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        custom.ChainPolicy.CustomTrustStore.AddRange(_anchors);
        custom.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck; // a private CA publishes no revocation lists
        custom.ChainPolicy.ApplicationPolicy.Add(s_serverAuth);
        if (chain is not null)
            foreach (var element in chain.ChainElements.Skip(1)) custom.ChainPolicy.ExtraStore.Add(element.Certificate);
        if (custom.Build(certificate))
        {
            LastRefusal = null;
            return true;
        }
        return Refuse($"the certificate ({certificate.Subject}, issued by {certificate.Issuer}) is not trusted: it does not chain to a certificate in --cacert {_anchorFile} ({Describe(custom.ChainStatus)})");
    }

    private static bool IsCurrent(X509Certificate2 c) => DateTime.Now >= c.NotBefore && DateTime.Now <= c.NotAfter;

    private bool Refuse(string reason)
    {
        LastRefusal = reason;
        return false;
    }

    private static string Describe(X509ChainStatus[] status) =>
        status.Length == 0 ? "not trusted" : string.Join(", ", status.Select(s => s.Status switch
        {
            X509ChainStatusFlags.PartialChain => "no trusted CA issued it",
            X509ChainStatusFlags.UntrustedRoot => "its root CA is not trusted",
            X509ChainStatusFlags.NotTimeValid => "outside its validity period",
            X509ChainStatusFlags.NotValidForUsage => "not for TLS servers",
            var other => other.ToString(),
        }).Distinct());
}
