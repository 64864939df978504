using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;

namespace Swarm.Coordinator.Security;

/// <summary>
/// An <see cref="HttpClient"/> for a coordinator: sends the API key on every request and trusts the coordinator's
/// certificate as <see cref="CoordinatorCertificateTrust"/> decides. <see cref="Explain"/> turns a failed request into
/// one line that says what to fix (a refused certificate says why).
/// </summary>
public sealed class CoordinatorHttpClient : IDisposable
{
    private readonly CoordinatorCertificateTrust _trust;

    private CoordinatorHttpClient(HttpClient http, CoordinatorCertificateTrust trust)
    {
        Http = http;
        _trust = trust;
    }

    /// <summary>The client; dispose this object, not it.</summary>
    public HttpClient Http { get; }

    /// <summary>A client with <paramref name="credentials"/> and <paramref name="timeout"/> per request (infinite by default).</summary>
    /// <exception cref="Swarm.Hosting.UsageException">The <c>--cacert</c> file is unusable.</exception>
    public static CoordinatorHttpClient Create(CoordinatorClientCredentials credentials, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(credentials);
        var anchors = credentials.CaCertFile is { } file ? CoordinatorClientFlags.LoadAnchors(file) : new X509Certificate2Collection();
        var trust = new CoordinatorCertificateTrust(anchors, credentials.CaCertFile);
        var handler = new HttpClientHandler { ServerCertificateCustomValidationCallback = trust.Validate };
        var http = new HttpClient(handler, disposeHandler: true) { Timeout = timeout ?? Timeout.InfiniteTimeSpan };
        if (credentials.ApiKey is { } key) http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        return new CoordinatorHttpClient(http, trust);
    }

    /// <summary>True when <paramref name="e"/> is a failed TLS handshake (e.g. a certificate not trusted).</summary>
    public static bool IsTlsFailure(HttpRequestException e) =>
        e is { HttpRequestError: HttpRequestError.SecureConnectionError } or { InnerException: AuthenticationException };

    /// <summary>Why <paramref name="e"/> happened, in one line without the exception's type (a refused certificate says why).</summary>
    public string Explain(HttpRequestException e)
    {
        ArgumentNullException.ThrowIfNull(e);
        if (IsTlsFailure(e)) return _trust.LastRefusal ?? OneLine(e.InnerException?.Message ?? e.Message);
        if (e.InnerException is SocketException se) return OneLine(se.Message);
        return e.HttpRequestError != HttpRequestError.Unknown ? e.HttpRequestError.ToString() : OneLine(e.Message);
    }

    /// <summary>One line for a request to <paramref name="url"/> that failed with <paramref name="e"/>.</summary>
    public string Describe(HttpRequestException e, string url) => IsTlsFailure(e)
        ? $"cannot connect securely to the coordinator at {url}: {Explain(e)}"
        : $"cannot reach the coordinator at {url} ({Explain(e)}); is `swarm coordinator` running and --url right?";

    /// <summary>What to do about an HTTP 401 answer: send a key, or another one.</summary>
    public string UnauthorizedHint => Http.DefaultRequestHeaders.Authorization is null
        ? "pass --api-key KEY or set SWARM_API_KEY"
        : "the key given by --api-key or SWARM_API_KEY was refused";

    private static string OneLine(string text) => text.ReplaceLineEndings(" ").Trim();

    /// <inheritdoc/>
    public void Dispose() => Http.Dispose();
}
