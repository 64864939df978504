using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Swarm.Tests.Transport;

/// <summary>Collects log lines so tests can assert that something was logged.</summary>
internal sealed class TestLogger : ILogger
{
    public ConcurrentQueue<(LogLevel Level, string Message)> Entries { get; } = new();

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        Entries.Enqueue((logLevel, formatter(state, exception)));

    public bool Contains(LogLevel level, string fragment) => Entries.Any(e => e.Level == level && e.Message.Contains(fragment, StringComparison.Ordinal));

    public string Dump() => string.Join("\n", Entries.Select(e => $"{e.Level}: {e.Message}"));
}
