namespace Swarm.Cli;

/// <summary>Models that ship with the CLI: the build copies <c>Models/</c> beside <c>swarm.dll</c>.</summary>
internal static class BuiltInModels
{
    /// <summary>
    /// codelm-tiny: a 4-layer GPT-NeoX (8.4 MB, fp16) trained on Python source, with its tokenizer — the default model
    /// of <c>swarm demo</c>, and the tests' model wherever a live swarm needs real text.
    /// </summary>
    public static string CodeLmTiny => Path.Combine(AppContext.BaseDirectory, "Models", "codelm-tiny");
}
