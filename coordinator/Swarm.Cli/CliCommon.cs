using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Serialization;
using Swarm.Model;
using Swarm.Sampling;
using static TorchSharp.torch;

namespace Swarm.Cli;

/// <summary>Options shared by several commands, and small parsing helpers.</summary>
internal static class CliCommon
{
    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>The sampling flags of the CLI contract: --max-new-tokens --temperature --top-k --top-p --seed (+ --stop-ids).</summary>
    public sealed class SamplingFlags
    {
        public Option<int> MaxNewTokens { get; } = new("--max-new-tokens") { Description = "Tokens to generate", DefaultValueFactory = _ => 32 };
        public Option<double> Temperature { get; } = new("--temperature") { Description = "0 = greedy", DefaultValueFactory = _ => 0.0 };
        public Option<int> TopK { get; } = new("--top-k") { Description = "Keep the k most likely tokens (0 = off)", DefaultValueFactory = _ => 0 };
        public Option<double> TopP { get; } = new("--top-p") { Description = "Nucleus sampling mass (1 = off)", DefaultValueFactory = _ => 1.0 };
        public Option<long?> Seed { get; } = new("--seed") { Description = "RNG seed: same seed, same output" };
        public Option<string?> StopIds { get; } = new("--stop-ids") { Description = "Comma-separated token ids that end generation" };

        public void AddTo(Command c)
        {
            c.Options.Add(MaxNewTokens); c.Options.Add(Temperature); c.Options.Add(TopK);
            c.Options.Add(TopP); c.Options.Add(Seed); c.Options.Add(StopIds);
        }

        public SamplingOptions Read(ParseResult r) => new()
        {
            MaxNewTokens = r.GetValue(MaxNewTokens),
            Temperature = r.GetValue(Temperature),
            TopK = r.GetValue(TopK),
            TopP = r.GetValue(TopP),
            Seed = r.GetValue(Seed),
            StopTokenIds = ParseIds(r.GetValue(StopIds), "--stop-ids"),
        };
    }

    /// <summary>Parses "1,2,3" (spaces allowed) into ids; throws <see cref="UsageException"/> on junk.</summary>
    public static int[] ParseIds(string? text, string flag)
    {
        if (string.IsNullOrWhiteSpace(text)) return [];
        var parts = text.Split([',', ' '], StringSplitOptions.RemoveEmptyEntries);
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], out ids[i]) || ids[i] < 0)
                throw new UsageException($"{flag}: '{parts[i]}' is not a token id (expected comma-separated non-negative integers)");
        return ids;
    }

    /// <summary>Parses a weight format (f32, bf16, f16, int8); throws <see cref="UsageException"/> on anything else.</summary>
    public static WeightFormat ParseWeights(string name, string flag) =>
        WeightFormats.TryParse(name) ?? throw new UsageException($"{flag}: unknown weight format '{name.Trim()}' (use f32, bf16, f16 or int8)");

    public static ScalarType ParseDtype(string name, string flag) => name.ToLowerInvariant() switch
    {
        "f32" or "float32" or "fp32" => ScalarType.Float32,
        "f16" or "float16" or "fp16" => ScalarType.Float16,
        "bf16" or "bfloat16" => ScalarType.BFloat16,
        _ => throw new UsageException($"{flag}: unknown dtype '{name}' (use f32, f16 or bf16)"),
    };
}
