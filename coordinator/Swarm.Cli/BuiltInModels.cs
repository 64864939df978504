namespace Swarm.Cli;

/// <summary>Models that ship with the CLI: the build copies <c>Models/</c> beside <c>swarm.dll</c>.</summary>
internal static class BuiltInModels
{
    /// <summary>
    /// codelm-tiny: a 4-layer GPT-NeoX (8.4 MB, fp16) trained on Python source, with its tokenizer — the default model
    /// of <c>swarm demo</c>, and the tests' model wherever a live swarm needs real text.
    /// </summary>
    public static string CodeLmTiny => Path.Combine(AppContext.BaseDirectory, "Models", "codelm-tiny");

    /// <summary>
    /// codelm-tiny's draft model: a 1-layer GPT-NeoX (1.6 MB, fp16) trained on the same code with the same tokenizer, for
    /// draft-model speculation (<c>--draft-model</c>) in <c>swarm bench speculative</c> and the tests.
    /// </summary>
    public static string CodeLmTinyDraft => Path.Combine(AppContext.BaseDirectory, "Models", "codelm-tiny-draft");
}
