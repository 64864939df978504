using System.Globalization;
using System.Text.Json;

namespace Swarm.Coordinator.Api;

/// <summary>
/// Parses the request extension <c>"swarm": {"hidden_states": {"layers": [0, 5, 11], "positions": "all" | "last"}}</c>
/// of <c>POST /v1/completions</c>. Unknown keys inside <c>swarm</c> are refused (an extension that is ignored would
/// silently answer something else than was asked).
/// </summary>
internal static class SwarmExtensionParser
{
    /// <summary>Most bytes of hidden states one request may ask for (f32 rows × hidden × layers): 32 MiB, so they fit a message.</summary>
    public const long MaxHiddenStateBytes = 32L << 20;

    /// <summary>The hidden states the request asks for, or null (none asked, or an error was reported).</summary>
    /// <param name="root">The request object.</param>
    /// <param name="ctx">The served model (layers, hidden size).</param>
    /// <param name="promptTokens">The prompt's length when known (for the size limit).</param>
    /// <param name="error">Receives (field, message, code) per problem.</param>
    public static HiddenStatesSelection? Parse(JsonElement root, CompletionValidationContext ctx, int? promptTokens, Action<string, string, string> error)
    {
        if (!root.TryGetProperty("swarm", out var swarm) || swarm.ValueKind == JsonValueKind.Null) return null;
        if (swarm.ValueKind != JsonValueKind.Object)
        {
            error("swarm", $"must be an object, not {CompletionRequestParser.Kind(swarm)}", "invalid_type");
            return null;
        }
        foreach (var p in swarm.EnumerateObject().Where(p => p.Name != "hidden_states"))
            error($"swarm.{p.Name}", "is not a known swarm extension (known: hidden_states)", "unsupported_parameter");
        if (!swarm.TryGetProperty("hidden_states", out var hs) || hs.ValueKind == JsonValueKind.Null) return null;
        if (hs.ValueKind != JsonValueKind.Object)
        {
            error("swarm.hidden_states", $"must be an object, not {CompletionRequestParser.Kind(hs)}", "invalid_type");
            return null;
        }
        foreach (var p in hs.EnumerateObject().Where(p => p.Name is not ("layers" or "positions")))
            error($"swarm.hidden_states.{p.Name}", "is not known (known: layers, positions)", "unsupported_parameter");

        bool allPositions = true;
        if (hs.TryGetProperty("positions", out var pos) && pos.ValueKind != JsonValueKind.Null)
        {
            if (pos.ValueKind == JsonValueKind.String && pos.ValueEquals("all"u8)) allPositions = true;
            else if (pos.ValueKind == JsonValueKind.String && pos.ValueEquals("last"u8)) allPositions = false;
            else
            {
                error("swarm.hidden_states.positions", "must be \"all\" or \"last\"", "invalid_value");
                return null;
            }
        }
        var layers = Layers(hs, ctx, error);
        if (layers is null) return null;
        long rows = allPositions ? promptTokens ?? 0 : 1;
        long bytes = rows * ctx.HiddenSize * sizeof(float) * layers.Count;
        if (bytes > MaxHiddenStateBytes)
        {
            error("swarm.hidden_states", string.Create(CultureInfo.InvariantCulture,
                $"asks for {bytes} bytes of hidden states ({layers.Count} layers × {rows} positions × {ctx.HiddenSize} floats), more than the limit of {MaxHiddenStateBytes}; ask for fewer layers or positions \"last\""),
                "invalid_value");
            return null;
        }
        return new HiddenStatesSelection(layers, allPositions);
    }

    private static List<int>? Layers(JsonElement hs, CompletionValidationContext ctx, Action<string, string, string> error)
    {
        const string field = "swarm.hidden_states.layers";
        if (!hs.TryGetProperty("layers", out var arr) || arr.ValueKind == JsonValueKind.Null)
        {
            error(field, "is required: an array of layer indices", "missing_required_parameter");
            return null;
        }
        if (arr.ValueKind != JsonValueKind.Array || arr.GetArrayLength() == 0)
        {
            error(field, "must be a non-empty array of layer indices", arr.ValueKind == JsonValueKind.Array ? "invalid_value" : "invalid_type");
            return null;
        }
        if (ctx.NumLayers <= 0)
        {
            error(field, "hidden states are not available from this coordinator", "invalid_value");
            return null;
        }
        var layers = new List<int>();
        foreach (var item in arr.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out long v))
            {
                error(field, $"must hold integer layer indices, not {CompletionRequestParser.Kind(item)}", "invalid_type");
                return null;
            }
            if (v < 0 || v >= ctx.NumLayers)
            {
                error(field, string.Create(CultureInfo.InvariantCulture, $"layer {v} does not exist: the model's layers are 0 … {ctx.NumLayers - 1}"), "invalid_value");
                return null;
            }
            if (layers.Contains((int)v))
            {
                error(field, string.Create(CultureInfo.InvariantCulture, $"layer {v} is named twice"), "invalid_value");
                return null;
            }
            layers.Add((int)v);
        }
        layers.Sort();
        return layers;
    }
}
