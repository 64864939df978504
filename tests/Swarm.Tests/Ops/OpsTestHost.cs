using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Swarm.Coordinator.Security;

namespace Swarm.Tests.Ops;

/// <summary>A real Kestrel server on 127.0.0.1 with a free port, with the endpoints a test maps; disposed by the test.</summary>
internal sealed class OpsTestHost : IAsyncDisposable
{
    private readonly WebApplication _app;

    private OpsTestHost(WebApplication app, string baseUrl)
    {
        _app = app;
        BaseUrl = baseUrl;
    }

    /// <summary>Base URL with a trailing slash, e.g. <c>http://127.0.0.1:41234/</c>.</summary>
    public string BaseUrl { get; }

    /// <summary>Starts a server whose endpoints <paramref name="map"/> adds, guarded by <paramref name="keys"/> when given.</summary>
    public static async Task<OpsTestHost> StartAsync(Action<IEndpointRouteBuilder> map, HttpAccessKeys? keys = null)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseKestrel(k => k.Listen(System.Net.IPAddress.Loopback, 0));
        builder.Logging.ClearProviders();
        var app = builder.Build();
        if (keys is not null) app.UseBearerKeys(keys);
        map(app);
        await app.StartAsync().ConfigureAwait(false);
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        return new OpsTestHost(app, address.TrimEnd('/') + "/");
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync().ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
    }
}
