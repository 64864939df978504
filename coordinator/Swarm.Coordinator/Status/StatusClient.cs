using System.Net.Http.Headers;
using System.Text.Json;
using Swarm.Coordinator.Api;
using Swarm.Coordinator.Security;

using Swarm.Hosting;

namespace Swarm.Coordinator.Status;

/// <summary>A status fetch that failed, with a one-line message for the operator.</summary>
internal sealed class StatusFetchException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>One answer of <c>GET /api/swarm</c>: the parsed status and the JSON exactly as received.</summary>
internal sealed record FetchedStatus(SwarmStatus Status, string Json);

/// <summary>Fetches <c>/api/swarm</c> from a coordinator.</summary>
internal sealed class StatusClient : IDisposable
{
    private readonly CoordinatorHttpClient _client;
    private readonly HttpClient _http;

    /// <summary>
    /// Creates a client for the coordinator at <paramref name="endpoint"/> (see <see cref="ResolveEndpoint"/>), sending the
    /// API key and trusting the CA of <paramref name="credentials"/> (none by default).
    /// </summary>
    public StatusClient(Uri endpoint, TimeSpan timeout, CoordinatorClientCredentials? credentials = null)
    {
        Endpoint = endpoint;
        _client = CoordinatorHttpClient.Create(credentials ?? CoordinatorClientCredentials.None);
        _http = _client.Http;
        _http.DefaultRequestHeaders.Accept.Add(new MediaTypeWithQualityHeaderValue("application/json"));
        RequestTimeout = timeout;
    }

    /// <summary>The full <c>…/api/swarm</c> URL.</summary>
    public Uri Endpoint { get; }

    /// <summary>How long one request may take.</summary>
    public TimeSpan RequestTimeout { get; }

    /// <summary>
    /// The status URL for <c>--url</c>: <c>http://host:port</c>, <c>host:port</c> (http assumed) or a URL already
    /// ending in <c>/api/swarm</c>; a path prefix is kept (<c>http://h/swarm</c> → <c>http://h/swarm/api/swarm</c>).
    /// </summary>
    /// <exception cref="UsageException">Not an http(s) URL.</exception>
    public static Uri ResolveEndpoint(string url)
    {
        string text = url.Trim();
        if (!text.Contains("://", StringComparison.Ordinal)) text = "http://" + text;
        if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps) || uri.Host.Length == 0)
            throw new UsageException($"--url: '{url}' is not an http(s) URL of a coordinator (e.g. http://127.0.0.1:8080)");
        string path = uri.AbsolutePath.TrimEnd('/');
        if (path.EndsWith("/api/swarm", StringComparison.OrdinalIgnoreCase)) return new UriBuilder(uri) { Path = path, Query = "" }.Uri;
        return new UriBuilder(uri) { Path = path + "/api/swarm", Query = "" }.Uri;
    }

    /// <summary>Fetches and parses the status.</summary>
    /// <exception cref="StatusFetchException">Unreachable, timed out, an HTTP error, or not a swarm status; the message is one line.</exception>
    public async Task<FetchedStatus> FetchAsync(CancellationToken cancellationToken)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(RequestTimeout);
        string json;
        try
        {
            using var response = await _http.GetAsync(Endpoint, HttpCompletionOption.ResponseContentRead, cts.Token).ConfigureAwait(false);
            if (response.StatusCode == System.Net.HttpStatusCode.Unauthorized)
                throw new StatusFetchException($"the coordinator at {Endpoint} answered HTTP 401 Unauthorized: {_client.UnauthorizedHint}");
            if (!response.IsSuccessStatusCode)
                throw new StatusFetchException($"the coordinator at {Endpoint} answered HTTP {(int)response.StatusCode} {response.ReasonPhrase}".TrimEnd());
            json = await response.Content.ReadAsStringAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
        {
            throw new StatusFetchException($"the coordinator at {Endpoint} did not answer within {RequestTimeout.TotalSeconds:0.#} s", e);
        }
        catch (HttpRequestException e)
        {
            throw new StatusFetchException(_client.Describe(e, Endpoint.ToString()), e);
        }
        try
        {
            return new FetchedStatus(SwarmStatus.FromJson(json), json);
        }
        catch (JsonException e)
        {
            throw new StatusFetchException($"{Endpoint} did not return a swarm status: {OneLine(e.Message)}", e);
        }
    }

    private static string OneLine(string text) => text.ReplaceLineEndings(" ").Trim();

    /// <inheritdoc />
    public void Dispose() => _client.Dispose();
}
