using System.Text.Json;

namespace Swarm.Coordinator.Api;

/// <summary>
/// Fields of OpenAI's completions schema that Swarm does not implement (yet). A request that sets one to anything
/// but its no-op value (<c>n: 1</c>, <c>presence_penalty: 0</c>, <c>null</c>, …) gets a 400 naming the field — never a
/// silently different answer. To implement a field, delete its rule here and parse it in
/// <see cref="CompletionRequestParser"/>.
/// </summary>
internal static class UnsupportedParameters
{
    /// <summary>The JSON kind a field must have; anything else is <c>invalid_type</c>.</summary>
    private enum Kind { Integer, Number, Boolean, String, Object }

    /// <param name="Field">Dotted path of the field (<c>a.b</c> for field b of object a).</param>
    /// <param name="Type">The kind its value must have.</param>
    /// <param name="IsNoOp">True for the value(s) that change nothing, which are accepted.</param>
    /// <param name="NoOp">The accepted value(s), for the message.</param>
    private sealed record Rule(string Field, Kind Type, Func<JsonElement, bool> IsNoOp, string NoOp);

    private static readonly Rule[] Rules =
    [
        new("n", Kind.Integer, e => e.GetInt64() == 1, "n = 1"),
        new("best_of", Kind.Integer, e => e.GetInt64() == 1, "best_of = 1"),
        new("suffix", Kind.String, e => e.ValueEquals(""u8), "an empty suffix"),
        new("presence_penalty", Kind.Number, e => e.GetDouble() == 0, "presence_penalty = 0"),
        new("frequency_penalty", Kind.Number, e => e.GetDouble() == 0, "frequency_penalty = 0"),
        new("logit_bias", Kind.Object, e => !e.EnumerateObject().Any(), "an empty logit_bias"),
    ];

    /// <summary>Reports every unsupported field of <paramref name="root"/> that is set to more than its no-op value.</summary>
    /// <param name="root">The request object.</param>
    /// <param name="error">Receives (field, message, code) per problem.</param>
    public static void Check(JsonElement root, Action<string, string, string> error)
    {
        foreach (var rule in Rules)
        {
            if (Find(root, rule.Field, error) is not JsonElement value) continue;
            if (!HasKind(value, rule.Type))
                error(rule.Field, $"must be {Describe(rule.Type)}, not {CompletionRequestParser.Kind(value)}", "invalid_type");
            else if (!rule.IsNoOp(value))
                error(rule.Field, $"is not supported yet; only {rule.NoOp} (or leaving it out) is accepted", "unsupported_parameter");
        }
    }

    /// <summary>The value at a dotted path, or null when it (or a parent object) is missing or null.</summary>
    private static JsonElement? Find(JsonElement root, string path, Action<string, string, string> error)
    {
        var current = root;
        string[] parts = path.Split('.');
        for (int i = 0; i < parts.Length; i++)
        {
            if (!current.TryGetProperty(parts[i], out var next) || next.ValueKind == JsonValueKind.Null) return null;
            if (i < parts.Length - 1 && next.ValueKind != JsonValueKind.Object)
            {
                string parent = string.Join('.', parts[..(i + 1)]);
                error(parent, $"must be an object, not {CompletionRequestParser.Kind(next)}", "invalid_type");
                return null;
            }
            current = next;
        }
        return current;
    }

    private static bool HasKind(JsonElement e, Kind kind) => kind switch
    {
        Kind.Integer => e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out _),
        Kind.Number => e.ValueKind == JsonValueKind.Number,
        Kind.Boolean => e.ValueKind is JsonValueKind.True or JsonValueKind.False,
        Kind.String => e.ValueKind == JsonValueKind.String,
        _ => e.ValueKind == JsonValueKind.Object,
    };

    private static string Describe(Kind kind) => kind switch
    {
        Kind.Integer => "an integer",
        Kind.Number => "a number",
        Kind.Boolean => "true or false",
        Kind.String => "a string",
        _ => "an object",
    };
}
