using static TorchSharp.torch;

namespace Swarm.Node.Verification;

/// <summary>What an injected fault does.</summary>
public enum StepFaultKind
{
    /// <summary>Adds noise as large as the values themselves to a fraction of the output positions (hidden states, or a last stage's logits).</summary>
    Corrupt,
    /// <summary>A last stage returns a wrong token with some probability.</summary>
    Token,
}

/// <summary>
/// A test hook that makes a node lie, so the coordinator's spot checks can be tested against real processes: the
/// environment variable <c>SWARM_FAULT=corrupt:P</c> adds noise to a fraction P of the node's output positions (after
/// the honest computation, before the output is fingerprinted and sent — as a bad GPU would); <c>SWARM_FAULT=token:P</c>
/// makes a last stage replace its sampled token with another one with probability P. Never set it in production.
/// </summary>
public sealed class StepFault
{
    /// <summary>The environment variable read at start.</summary>
    public const string Variable = "SWARM_FAULT";

    private readonly Random _random;

    /// <param name="kind">What the fault does.</param>
    /// <param name="probability">Fraction of positions (corrupt) or of tokens (token) affected, in [0, 1].</param>
    /// <param name="seed">Seed of the fault's draws; null draws a random one.</param>
    public StepFault(StepFaultKind kind, double probability, int? seed = null)
    {
        if (!(probability is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(probability), "P must be in [0, 1]");
        Kind = kind;
        Probability = probability;
        _random = seed is int s ? new Random(s) : new Random();
    }

    /// <summary>What the fault does.</summary>
    public StepFaultKind Kind { get; }

    /// <summary>Fraction affected.</summary>
    public double Probability { get; }

    /// <summary>Parses <c>corrupt:P</c> or <c>token:P</c>; null for null or empty text.</summary>
    /// <exception cref="FormatException">Anything else.</exception>
    public static StepFault? Parse(string? text)
    {
        if (string.IsNullOrWhiteSpace(text)) return null;
        var parts = text.Split(':', 2);
        var kind = parts[0].Trim().ToLowerInvariant() switch
        {
            "corrupt" => StepFaultKind.Corrupt,
            "token" => StepFaultKind.Token,
            _ => throw new FormatException($"{Variable}='{text}': use corrupt:P or token:P"),
        };
        if (parts.Length != 2 || !double.TryParse(parts[1], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double p)
            || !(p is >= 0 and <= 1))
            throw new FormatException($"{Variable}='{text}': P must be a number in [0, 1]");
        return new StepFault(kind, p);
    }

    /// <summary>The fault named by <see cref="Variable"/>, or null.</summary>
    public static StepFault? FromEnvironment() => Parse(Environment.GetEnvironmentVariable(Variable));

    /// <summary>
    /// With <see cref="StepFaultKind.Corrupt"/>, returns <paramref name="rows"/> ([t, dim]) with noise added to each row
    /// with probability P (a new tensor in the current dispose scope); otherwise (or when no row was drawn) the input itself.
    /// </summary>
    public Tensor Corrupt(Tensor rows)
    {
        if (Kind != StepFaultKind.Corrupt) return rows;
        long t = rows.dim() == 1 ? 1 : rows.shape[0];
        var hit = new List<long>();
        lock (_random)
            for (long i = 0; i < t; i++)
                if (_random.NextDouble() < Probability) hit.Add(i);
        if (hit.Count == 0) return rows;
        var x = (rows.dim() == 1 ? rows.unsqueeze(0) : rows).to_type(ScalarType.Float32).clone();
        foreach (long i in hit)
        {
            var row = x[i];
            var rms = row.square().mean().sqrt().clamp_min(1e-3);
            row.add_(randn_like(row) * rms);
        }
        return x.to_type(rows.dtype).reshape(rows.shape);
    }

    /// <summary>With <see cref="StepFaultKind.Token"/>, another token than <paramref name="token"/> with probability P; else <paramref name="token"/>.</summary>
    public int Token(int token, int vocabSize)
    {
        if (Kind != StepFaultKind.Token || vocabSize < 2) return token;
        lock (_random)
            return _random.NextDouble() < Probability ? (token + 1 + _random.Next(vocabSize - 1)) % vocabSize : token;
    }
}
