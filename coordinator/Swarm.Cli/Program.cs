using System.CommandLine;
using Swarm.Cli;
using Swarm.Cli.Commands;
using Swarm.Engine;
using Swarm.Model;

TorchRuntime.PrepareEnvironment(); // before anything can load libtorch
var root = new RootCommand("Swarm: run GPT-NeoX / Pythia models across many machines");
root.Subcommands.Add(DemoCommand.Create());
root.Subcommands.Add(RunCommand.Create());
root.Subcommands.Add(ModelCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
root.Subcommands.Add(DaemonCommands.Coordinator());
root.Subcommands.Add(DaemonCommands.Node());
root.Subcommands.Add(GenerateCommand.Create());
root.Subcommands.Add(Swarm.Cli.Status.StatusCommand.Create());

try
{
    return await root.Parse(args).InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (Exception e) when (Unwrap(e) is UsageException or CheckpointException or TorchLoadException or ArgumentException or InvalidOperationException)
{
    var inner = Unwrap(e);
    Console.Error.WriteLine($"swarm: {inner.Message}");
    return inner is UsageException ? 2 : 1;
}

static Exception Unwrap(Exception e) => e is AggregateException { InnerExceptions.Count: 1 } a ? Unwrap(a.InnerExceptions[0]) : e;
