using System.CommandLine;
using Swarm.Coordinator.Service;
using Swarm.Coordinator.Status;
using Swarm.Hosting;
using Swarm.Model;

// The coordinator alone, for its container image: the same command and options as `swarm coordinator`,
// without the inference engine (no TorchSharp, no libtorch in this program's dependency closure).
var root = new RootCommand("Swarm coordinator: placement, routing, jobs, HTTP API (no inference engine)");
var coordinator = CoordinatorCommand.Create();
foreach (var option in coordinator.Options) root.Options.Add(option);
root.Action = coordinator.Action;
root.Subcommands.Add(StatusCommand.Create()); // for health checks in the image: swarm-coordinator status --url …
return await CommandLineRunner.RunAsync(root, args, typeof(CheckpointException), typeof(Swarm.Transport.Security.IdentityException));
