using System.Globalization;
using LiteNetLib;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Swarm.Transport;

/// <summary>
/// LiteNetLib reports its own errors — an invalid datagram, a socket error — through the process-wide
/// <see cref="NetDebug.Logger"/>, which by default writes one console line each: 25,000 garbage datagrams became
/// thousands of identical <c>[NM] DataReceived: bad!</c> lines. This adapter routes them into our logging, one line
/// per message kind per <see cref="RepeatedLogLimiter.Interval"/>, stack traces cut to their first line, and counts
/// invalid datagrams for <c>swarm.transport.dropped</c>. Its destination is the logger of the latest transport
/// started with one: the adapter is process-wide, as LiteNetLib's hook is.
/// </summary>
internal sealed class LiteNetLibLog : INetLogger
{
    private static readonly LiteNetLibLog Instance = new();
    private static long s_invalidDatagrams;

    [ThreadStatic]
    private static bool t_binding;

    private readonly RepeatedLogLimiter _limiter = new();
    private volatile ILogger _logger = NullLogger.Instance;

    /// <summary>Datagrams LiteNetLib dropped as invalid (no packet type, or shorter than its header), in this process.</summary>
    public static long InvalidDatagrams => Interlocked.Read(ref s_invalidDatagrams);

    /// <summary>Installs the adapter (idempotent) and sends its lines to <paramref name="logger"/> unless that is the null logger.</summary>
    public static void Attach(ILogger logger)
    {
        NetDebug.Logger = Instance;
        if (logger is not NullLogger) Instance._logger = logger;
    }

    /// <summary>
    /// Runs <paramref name="bind"/> (which binds LiteNetLib's socket on this thread) with LiteNetLib's bind errors at
    /// Debug level: the transport reports a failed bind itself, as one line naming the address.
    /// </summary>
    public static T WhileBinding<T>(Func<T> bind)
    {
        t_binding = true;
        try { return bind(); }
        finally { t_binding = false; }
    }

    /// <inheritdoc/>
    public void WriteNet(NetLogLevel level, string str, params object[] args)
    {
        string text = args is { Length: > 0 } ? string.Format(CultureInfo.InvariantCulture, str, args) : str;
        int newline = text.IndexOfAny(['\r', '\n']);
        string line = newline < 0 ? text : text[..newline];
        if (line.Contains("DataReceived", StringComparison.Ordinal) && line.Contains("bad!", StringComparison.Ordinal))
            Interlocked.Increment(ref s_invalidDatagrams);
        var logLevel = t_binding ? LogLevel.Debug : level switch
        {
            NetLogLevel.Error or NetLogLevel.Warning => LogLevel.Warning,
            NetLogLevel.Info => LogLevel.Information,
            _ => LogLevel.Debug,
        };
        var logger = _logger;
        if (!logger.IsEnabled(logLevel)) return;
        if (_limiter.ShouldLog(logger, Kind(line), logLevel)) TransportLog.LiteNetLib(logger, logLevel, line);
    }

    /// <summary>The line without digits (ports, counts, error codes), at most 80 characters: one kind per message shape.</summary>
    private static string Kind(string line)
    {
        var kind = new string(line.Where(c => !char.IsAsciiDigit(c)).ToArray());
        return kind.Length <= 80 ? kind : kind[..80];
    }
}
