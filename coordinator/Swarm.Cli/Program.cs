using System.CommandLine;
using Swarm.Cli.Commands;
using Swarm.Coordinator.Service;
using Swarm.Engine;
using Swarm.Model;
using Swarm.Node;

TorchRuntime.PrepareEnvironment(); // before anything can load libtorch
var root = new RootCommand("Swarm: run GPT-NeoX / Pythia models across many machines");
root.Subcommands.Add(DemoCommand.Create());
root.Subcommands.Add(RunCommand.Create());
root.Subcommands.Add(ModelCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
root.Subcommands.Add(SimCommand.Create());
root.Subcommands.Add(CoordinatorCommand.Create());
root.Subcommands.Add(NodeCommand.Create());
root.Subcommands.Add(GenerateCommand.Create());
root.Subcommands.Add(Swarm.Coordinator.Status.StatusCommand.Create());
return await CommandLineRunner.RunAsync(root, args, typeof(CheckpointException), typeof(TorchLoadException), typeof(Swarm.Weights.WeightFetchException),
    typeof(Swarm.Transport.Security.IdentityException));
