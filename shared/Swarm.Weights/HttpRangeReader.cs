using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;

namespace Swarm.Weights;

/// <summary>
/// Reads whole small files and byte ranges of large ones over HTTP, and turns every way that can go wrong into a
/// <see cref="WeightFetchException"/> that names the URL: unreachable host, HTTP errors, a server that ignores the
/// <c>Range</c> header (answers 200 with the whole file — refused before its body is read), a range answered with the
/// wrong bytes, a body that ends early, a server that stalls.
/// </summary>
public sealed class HttpRangeReader
{
    private const int CopyBufferBytes = 1 << 16;
    private readonly HttpClient _http;

    /// <summary>Creates a reader over <paramref name="http"/> (not owned; make it with <see cref="CreateHttpClient"/>).</summary>
    /// <param name="idleTimeout">How long a response may send nothing before the read fails; default 60 s.</param>
    public HttpRangeReader(HttpClient http, TimeSpan? idleTimeout = null)
    {
        _http = http;
        IdleTimeout = idleTimeout ?? TimeSpan.FromSeconds(60);
    }

    /// <summary>How long a response may send nothing before the read fails.</summary>
    public TimeSpan IdleTimeout { get; }

    /// <summary>
    /// An <see cref="HttpClient"/> suited to weight downloads: no overall timeout (a tensor may take minutes; stalls are
    /// caught by <see cref="IdleTimeout"/>), a 15 s connect timeout, no transparent decompression (it would break ranges).
    /// </summary>
    public static HttpClient CreateHttpClient()
    {
        var handler = new SocketsHttpHandler
        {
            ConnectTimeout = TimeSpan.FromSeconds(15),
            AutomaticDecompression = DecompressionMethods.None,
            MaxConnectionsPerServer = 16,
        };
        var http = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan };
        http.DefaultRequestHeaders.UserAgent.ParseAdd("swarm-weights/1");
        return http;
    }

    /// <summary>Reads a whole file of at most <paramref name="maxBytes"/>; null when <paramref name="optional"/> and it is absent (404).</summary>
    public async Task<byte[]?> GetFileAsync(Uri uri, long maxBytes, bool optional, CancellationToken ct)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, uri);
        using var response = await SendAsync(request, ct).ConfigureAwait(false);
        if (optional && response.StatusCode == HttpStatusCode.NotFound) return null;
        EnsureSuccess(response, uri);
        long? length = response.Content.Headers.ContentLength;
        if (length > maxBytes)
            throw new WeightFetchException($"{uri}: {length} bytes, more than the {maxBytes} expected of this file");
        var buffer = new MemoryStream();
        long read = await CopyBodyAsync(response, uri, buffer, maxBytes + 1, null, ct).ConfigureAwait(false);
        if (read > maxBytes)
            throw new WeightFetchException($"{uri}: more than the {maxBytes} bytes expected of this file");
        if (length is { } declared && read != declared)
            throw new WeightFetchException($"{uri}: truncated response: {read} of {declared} bytes arrived");
        return buffer.ToArray();
    }

    /// <summary>Reads bytes [<paramref name="begin"/>, <paramref name="end"/>) of a file; also returns the file's length.</summary>
    public async Task<(byte[] Bytes, long FileLength)> GetRangeAsync(Uri uri, long begin, long end, CancellationToken ct)
    {
        var buffer = new MemoryStream((int)Math.Min(end - begin, 1 << 20));
        long fileLength = await CopyRangeAsync(uri, begin, end, buffer, null, ct).ConfigureAwait(false);
        return (buffer.ToArray(), fileLength);
    }

    /// <summary>
    /// Copies bytes [<paramref name="begin"/>, <paramref name="end"/>) of a file into <paramref name="destination"/>,
    /// reporting each chunk to <paramref name="onBytes"/>; returns the file's length (from <c>Content-Range</c>).
    /// Errors writing <paramref name="destination"/> propagate unchanged; network errors become <see cref="WeightFetchException"/>.
    /// </summary>
    public async Task<long> CopyRangeAsync(Uri uri, long begin, long end, Stream destination, Action<int>? onBytes, CancellationToken ct)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(begin);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(end, begin);
        using var request = new HttpRequestMessage(HttpMethod.Get, uri);
        request.Headers.Range = new RangeHeaderValue(begin, end - 1);
        using var response = await SendAsync(request, ct).ConfigureAwait(false);
        string what = $"{uri} bytes [{begin}, {end})";
        if (response.StatusCode == HttpStatusCode.OK)
            throw new WeightFetchException($"{uri}: the server ignored the Range request and answered with the whole file (HTTP 200); " +
                                           "Swarm fetches only a stage's bytes and needs a server with HTTP range support");
        if (response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable)
            throw new WeightFetchException($"{what}: beyond the end of the file (HTTP 416); the file is shorter than its header says, or it changed");
        EnsureSuccess(response, uri);
        if (response.StatusCode != HttpStatusCode.PartialContent)
            throw new WeightFetchException($"{what}: expected HTTP 206 Partial Content, got {(int)response.StatusCode} {response.ReasonPhrase}");
        var range = response.Content.Headers.ContentRange;
        if (range is not { HasRange: true, From: { } from, To: { } to } || from != begin || to != end - 1)
            throw new WeightFetchException($"{what}: the server answered with {(range is null ? "no Content-Range" : $"Content-Range '{range}'")} instead of the bytes asked for");
        if (range.Length is not { } fileLength)
            throw new WeightFetchException($"{what}: the server did not say the file's length (Content-Range '{range}'), so its header cannot be checked");
        long read = await CopyBodyAsync(response, uri, destination, end - begin, onBytes, ct).ConfigureAwait(false);
        if (read < end - begin)
            throw new WeightFetchException($"{what}: truncated response: the body ended after {read} of {end - begin} bytes");
        return fileLength;
    }

    private async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(IdleTimeout);
        try
        {
            return await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token).ConfigureAwait(false);
        }
        catch (HttpRequestException e)
        {
            string host = request.RequestUri!.Authority;
            string why = e.InnerException is SocketException s ? s.Message : e.Message;
            throw new WeightFetchException($"cannot reach {host} ({request.RequestUri}): {why}", e);
        }
        catch (OperationCanceledException e) when (!ct.IsCancellationRequested)
        {
            throw new WeightFetchException($"{request.RequestUri}: no answer within {IdleTimeout.TotalSeconds:0} s", e);
        }
    }

    private static void EnsureSuccess(HttpResponseMessage response, Uri uri)
    {
        if (response.IsSuccessStatusCode) return;
        string hint = response.StatusCode switch
        {
            HttpStatusCode.NotFound => " — check the repository, the revision and the file name",
            HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden => " — the repository is private or gated",
            _ => "",
        };
        throw new WeightFetchException($"{uri}: HTTP {(int)response.StatusCode} {response.ReasonPhrase}{hint}", response.StatusCode);
    }

    /// <summary>
    /// Copies at most <paramref name="limit"/> bytes of the body; a read that stalls longer than the idle timeout fails.
    /// Only reads are translated: an error writing <paramref name="destination"/> (disk full) propagates as it is.
    /// </summary>
    private async Task<long> CopyBodyAsync(HttpResponseMessage response, Uri uri, Stream destination, long limit, Action<int>? onBytes, CancellationToken ct)
    {
        var buffer = new byte[(int)Math.Min(CopyBufferBytes, Math.Max(1, limit))];
        long total = 0;
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(ct);
        Stream body;
        try { body = await response.Content.ReadAsStreamAsync(idle.Token).ConfigureAwait(false); }
        catch (Exception e) when (e is IOException or HttpRequestException) { throw Broken(uri, total, e); }
        await using (body.ConfigureAwait(false))
        {
            while (total < limit)
            {
                int n;
                try
                {
                    idle.CancelAfter(IdleTimeout);
                    n = await body.ReadAsync(buffer.AsMemory(0, (int)Math.Min(buffer.Length, limit - total)), idle.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException e) when (!ct.IsCancellationRequested)
                {
                    throw new WeightFetchException($"{uri}: the server sent nothing for {IdleTimeout.TotalSeconds:0} s after {total} bytes", e);
                }
                catch (Exception e) when (e is IOException or HttpRequestException) { throw Broken(uri, total, e); }
                if (n == 0) break;
                await destination.WriteAsync(buffer.AsMemory(0, n), ct).ConfigureAwait(false);
                total += n;
                onBytes?.Invoke(n);
            }
        }
        return total;
    }

    private static WeightFetchException Broken(Uri uri, long received, Exception e) =>
        new($"{uri}: truncated response: the connection broke after {received} bytes ({e.Message})", e);
}
