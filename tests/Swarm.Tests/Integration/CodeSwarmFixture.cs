using Swarm.Cli;
using Xunit;

namespace Swarm.Tests.Integration;

/// <summary>
/// A 2-node swarm (real processes) on codelm-tiny — a small GPT-NeoX trained on Python, with a tokenizer, so text
/// prompts work — served under the name <see cref="ModelName"/>; shared by the HTTP contract tests.
/// </summary>
public sealed class CodeSwarmFixture : IAsyncLifetime
{
    /// <summary>The name the coordinator serves the model as.</summary>
    public const string ModelName = "codelm-tiny";

    /// <summary>The checkpoint folder (config.json, model.safetensors, tokenizer.json): the copy the CLI ships for <c>swarm demo</c>.</summary>
    public static string ModelDir => BuiltInModels.CodeLmTiny;

    internal LocalSwarm Swarm { get; private set; } = null!;

    /// <summary>Base URL of the coordinator's HTTP API.</summary>
    public string Url => Swarm.HttpUrl;

    /// <summary>The coordinator's log so far.</summary>
    public string CoordinatorLog() => File.ReadAllText(Path.Combine(Swarm.LogDir, "coordinator.log"));

    public async Task InitializeAsync() =>
        Swarm = await LocalSwarm.StartAsync(new LocalSwarmOptions
        {
            Model = ModelDir, Nodes = 2, Layers = ["0:2", "2:4"], WireDtype = "f32", ThreadsPerNode = 1,
            CoordinatorArgs = ["--model-name", ModelName],
        });

    public async Task DisposeAsync() => await Swarm.DisposeAsync();
}
