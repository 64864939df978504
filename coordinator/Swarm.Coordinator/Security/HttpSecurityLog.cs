using System.Net;
using Microsoft.Extensions.Logging;
using Swarm.Coordinator.Service;

namespace Swarm.Coordinator.Security;

/// <summary>Says at start how the HTTP API is protected, and warns where that protection is weak.</summary>
internal static partial class HttpSecurityLog
{
    /// <summary>Logs the API's keys (how many, never which), TLS certificate and metrics protection.</summary>
    public static void Report(ILogger logger, CoordinatorOptions options, IPEndPoint http, TlsServerCertificate? tls)
    {
        ArgumentNullException.ThrowIfNull(logger);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(http);
        if (tls is not null) LogHttps(logger, tls.Describe());
        if (options.ApiKeys.Count > 0) LogKeys(logger, options.ApiKeys.Count, string.IsNullOrEmpty(options.MetricsKey) ? "open" : "its own key");
        else LogNoKeys(logger);
        if (options.ApiKeys.Count > 0 && tls is null && !IPAddress.IsLoopback(http.Address)) LogKeysInClear(logger, http.ToString());
    }

    [LoggerMessage(131, LogLevel.Information, "HTTPS with certificate {Certificate}")]
    private static partial void LogHttps(ILogger logger, string certificate);

    [LoggerMessage(132, LogLevel.Information, "HTTP API requires one of {Count} API keys; /healthz and the dashboard page are open, /metrics is {Metrics}")]
    private static partial void LogKeys(ILogger logger, int count, string metrics);

    [LoggerMessage(133, LogLevel.Information, "no API key: the HTTP API answers anyone who can reach it (allowed on loopback only)")]
    private static partial void LogNoKeys(ILogger logger);

    [LoggerMessage(134, LogLevel.Warning, "HTTP on {Address} without TLS: API keys cross the network in the clear; use --tls-cert/--tls-key or a TLS-terminating proxy")]
    private static partial void LogKeysInClear(ILogger logger, string address);
}
