using System.CommandLine;

namespace Swarm.Hosting;

/// <summary>
/// Runs a command line with the CLI's error convention: a <see cref="UsageException"/> prints one line and
/// exits 2; a <see cref="CommandFailedException"/> or an exception of one of the given runtime-error types (a bad
/// checkpoint, a port in use, …) prints one line and exits 1; anything else is a bug and propagates with its stack trace.
/// </summary>
public static class CommandLineRunner
{
    public static async Task<int> RunAsync(RootCommand root, string[] args, params Type[] runtimeErrors)
    {
        try
        {
            return await root.Parse(args).InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (Exception e) when (Unwrap(e) is var inner && (inner is UsageException or CommandFailedException or ArgumentException or InvalidOperationException
                                                             || runtimeErrors.Any(t => t.IsInstanceOfType(inner))))
        {
            Console.Error.WriteLine($"{root.Name}: {inner.Message}");
            return inner is UsageException ? 2 : 1;
        }
    }

    private static Exception Unwrap(Exception e) => e is AggregateException { InnerExceptions.Count: 1 } a ? Unwrap(a.InnerExceptions[0]) : e;
}
