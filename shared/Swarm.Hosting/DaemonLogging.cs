using Microsoft.Extensions.Logging;

namespace Swarm.Hosting;

/// <summary>One log format for every daemon: single-line console, timestamps, level from <c>SWARM_LOG_LEVEL</c>.</summary>
public static class DaemonLogging
{
    public static void Configure(ILoggingBuilder logging)
    {
        logging.ClearProviders();
        logging.AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss.fff "; });
        logging.AddFilter("Microsoft", LogLevel.Warning);
        logging.SetMinimumLevel(Environment.GetEnvironmentVariable("SWARM_LOG_LEVEL") is { } l && Enum.TryParse<LogLevel>(l, true, out var lv) ? lv : LogLevel.Information);
    }
}
