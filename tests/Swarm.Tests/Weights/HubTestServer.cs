using System.Collections.Concurrent;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Swarm.Tests.Weights;

/// <summary>
/// A real HTTP server on 127.0.0.1 (Kestrel, free port) that serves checkpoint files in the HF hub's URL layout,
/// <c>/ORG/NAME/resolve/REV/FILE</c>, with single-range <c>Range</c> support, and counts every body byte it sends.
/// Misbehaviours on demand: ignore Range (answer 200 with the whole file), cut tensor bodies in half, stop sending
/// tensor data after a byte budget.
/// </summary>
internal sealed class HubTestServer : IAsyncDisposable
{
    private const int ChunkBytes = 16 * 1024;
    private readonly WebApplication _app;
    private readonly ConcurrentDictionary<string, byte[]> _files = new(StringComparer.Ordinal);
    private readonly Lock _budgetGate = new();
    private readonly TaskCompletionSource _stopping = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _served, _dataServed, _budgetUsed;
    private long? _pauseAfter;

    /// <summary>One answered request: the path and the byte range sent ([Begin, End) of the file).</summary>
    public sealed record Served(string Path, long Begin, long End, int Status);

    private HubTestServer(WebApplication app, string baseUrl)
    {
        _app = app;
        BaseUrl = baseUrl;
    }

    /// <summary><c>http://127.0.0.1:PORT</c>, no trailing slash.</summary>
    public string BaseUrl { get; }

    /// <summary>Body bytes sent since the start or the last <see cref="ResetCounters"/>.</summary>
    public long BytesServed => Interlocked.Read(ref _served);

    /// <summary>Body bytes sent from the data sections of safetensors files (tensor bytes, no headers).</summary>
    public long DataBytesServed => Interlocked.Read(ref _dataServed);

    /// <summary>Every request answered since the last reset.</summary>
    public ConcurrentQueue<Served> Log { get; private set; } = new();

    /// <summary>Answer Range requests with 200 and the whole file, as a server without range support does.</summary>
    public bool IgnoreRange { get; set; }

    /// <summary>For ranges of tensor data: send only the first half of the body, then end it.</summary>
    public bool TruncateData { get; set; }

    public static async Task<HubTestServer> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseKestrel(k => k.Listen(System.Net.IPAddress.Loopback, 0));
        builder.Logging.ClearProviders();
        var app = builder.Build();
        HubTestServer? server = null;
        app.MapGet("/{**path}", (HttpContext ctx) => server!.ServeAsync(ctx));
        await app.StartAsync();
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        server = new HubTestServer(app, address.TrimEnd('/'));
        return server;
    }

    /// <summary>The repository URL of ORG/NAME on this server.</summary>
    public string RepoUrl(string repo) => $"{BaseUrl}/{repo}";

    /// <summary>Serves every file of <paramref name="folder"/> as repository <paramref name="repo"/> at <paramref name="revision"/>.</summary>
    public void AddFolder(string repo, string revision, string folder)
    {
        foreach (var file in Directory.GetFiles(folder))
            AddFile(repo, revision, Path.GetFileName(file), File.ReadAllBytes(file));
    }

    /// <summary>Serves <paramref name="bytes"/> as one file of a repository revision (replacing what was there).</summary>
    public void AddFile(string repo, string revision, string name, byte[] bytes) => _files[$"/{repo}/resolve/{revision}/{name}"] = bytes;

    /// <summary>The bytes served at a path, to corrupt in place.</summary>
    public byte[] FileBytes(string repo, string revision, string name) => _files[$"/{repo}/resolve/{revision}/{name}"];

    /// <summary>
    /// From now on stop sending tensor data (bytes of a safetensors data section) once <paramref name="bytes"/> of it have
    /// gone out; metadata and headers are not held back.
    /// </summary>
    public void PauseAfter(long bytes)
    {
        lock (_budgetGate) { _pauseAfter = bytes; _budgetUsed = 0; }
    }

    /// <summary>
    /// Lifts the budget for new responses. Responses already held stay held until their client goes away (or the server
    /// stops), so nothing they send is counted against a later pull.
    /// </summary>
    public void LiftPause()
    {
        lock (_budgetGate) _pauseAfter = null;
    }

    public void ResetCounters()
    {
        Interlocked.Exchange(ref _served, 0);
        Interlocked.Exchange(ref _dataServed, 0);
        Log = new ConcurrentQueue<Served>();
    }

    private async Task ServeAsync(HttpContext ctx)
    {
        string path = ctx.Request.Path.Value ?? "";
        if (!_files.TryGetValue(path, out var bytes))
        {
            Log.Enqueue(new Served(path, 0, 0, 404));
            ctx.Response.StatusCode = StatusCodes.Status404NotFound;
            return;
        }
        long begin = 0, end = bytes.Length;
        string? range = ctx.Request.Headers.Range;
        if (range is not null && !IgnoreRange)
        {
            if (!TryParseRange(range, bytes.Length, out begin, out end))
            {
                Log.Enqueue(new Served(path, 0, 0, 416));
                ctx.Response.StatusCode = StatusCodes.Status416RangeNotSatisfiable;
                ctx.Response.Headers.ContentRange = $"bytes */{bytes.Length}";
                return;
            }
            ctx.Response.StatusCode = StatusCodes.Status206PartialContent;
            ctx.Response.Headers.ContentRange = $"bytes {begin}-{end - 1}/{bytes.Length}";
        }
        Log.Enqueue(new Served(path, begin, end, ctx.Response.StatusCode));
        long dataStart = path.EndsWith(".safetensors", StringComparison.Ordinal) && bytes.Length >= 8 ? 8 + BitConverter.ToInt64(bytes, 0) : long.MaxValue;
        bool truncate = TruncateData && begin >= dataStart;
        // A truncated body goes out chunked (no Content-Length) and ends cleanly early, so every byte sent arrives.
        if (!truncate) ctx.Response.ContentLength = end - begin;
        long stop = truncate ? begin + (end - begin) / 2 : end;
        for (long at = begin; at < stop;)
        {
            int n = (int)Math.Min(ChunkBytes, stop - at);
            bool isData = at >= dataStart;
            if (!isData) n = (int)Math.Min(n, dataStart - at); // a chunk is either header or data
            else n = await TakeBudgetAsync(n, ctx.RequestAborted);
            // Counted before they go out, so a client that has read them never sees a count without them.
            Interlocked.Add(ref _served, n);
            if (isData) Interlocked.Add(ref _dataServed, n);
            await ctx.Response.Body.WriteAsync(bytes.AsMemory((int)at, n), ctx.RequestAborted);
            await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
            at += n;
        }
    }

    /// <summary>Up to <paramref name="wanted"/> bytes may be sent now; waits while the pause budget is spent.</summary>
    private async Task<int> TakeBudgetAsync(int wanted, CancellationToken aborted)
    {
        lock (_budgetGate)
        {
            if (_pauseAfter is not { } limit) return wanted;
            long left = limit - _budgetUsed;
            if (left > 0)
            {
                int granted = (int)Math.Min(wanted, left);
                _budgetUsed += granted;
                return granted;
            }
        }
        await _stopping.Task.WaitAsync(aborted); // held: ends when the client goes away or the server stops
        throw new OperationCanceledException("the test server is stopping");
    }

    private static bool TryParseRange(string header, long length, out long begin, out long end)
    {
        begin = end = 0;
        if (!header.StartsWith("bytes=", StringComparison.Ordinal) || header.Contains(',')) return false;
        var parts = header["bytes=".Length..].Split('-');
        if (parts.Length != 2 || !long.TryParse(parts[0], out begin)) return false;
        long last = parts[1].Length == 0 ? length - 1 : long.TryParse(parts[1], out long l) ? l : -1;
        if (begin >= length || last < begin) return false;
        end = Math.Min(last, length - 1) + 1;
        return true;
    }

    public async ValueTask DisposeAsync()
    {
        _stopping.TrySetResult();
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
