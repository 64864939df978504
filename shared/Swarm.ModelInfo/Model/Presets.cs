namespace Swarm.Model;

/// <summary>The eight Pythia sizes (Biderman et al. 2023, table 1), vocabulary padded to 50304.</summary>
public static class Presets
{
    public static readonly IReadOnlyDictionary<string, ModelConfig> All = new Dictionary<string, ModelConfig>
    {
        ["pythia-70m"] = Make(6, 512, 8),
        ["pythia-160m"] = Make(12, 768, 12),
        ["pythia-410m"] = Make(24, 1024, 16),
        ["pythia-1b"] = Make(16, 2048, 8),
        ["pythia-1.4b"] = Make(24, 2048, 16),
        ["pythia-2.8b"] = Make(32, 2560, 32),
        ["pythia-6.9b"] = Make(32, 4096, 32),
        ["pythia-12b"] = Make(36, 5120, 40),
    };

    public static ModelConfig Get(string name) => All.TryGetValue(name, out var c) ? c
        : throw new ArgumentException($"unknown preset '{name}'; known: {string.Join(", ", All.Keys)}");

    private static ModelConfig Make(int layers, int hidden, int heads) => new()
    {
        NumLayers = layers, HiddenSize = hidden, NumHeads = heads, IntermediateSize = 4 * hidden,
        VocabSize = 50304, RotaryPct = 0.25, RotaryBase = 10000, UseParallelResidual = true,
        LayerNormEps = 1e-5, MaxPositionEmbeddings = 2048, BosTokenId = 0, EosTokenId = 0,
    };
}
