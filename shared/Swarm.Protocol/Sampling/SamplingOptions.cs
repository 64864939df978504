namespace Swarm.Sampling;

/// <summary>
/// How a generation job picks its next tokens. Immutable; travels with the job so any node can
/// re-create the job's <c>Sampler</c> at any step.
/// </summary>
public sealed record SamplingOptions
{
    /// <summary>Greedy decoding with the given token budget.</summary>
    public static SamplingOptions Greedy(int maxNewTokens = 64) => new() { MaxNewTokens = maxNewTokens };

    /// <summary>Softmax temperature. 0 (the default) means greedy: always the highest logit.</summary>
    public double Temperature { get; init; }

    /// <summary>Keep only the K most likely tokens before drawing. 0 (the default) turns it off.</summary>
    public int TopK { get; init; }

    /// <summary>
    /// Nucleus sampling: keep the smallest set of most likely tokens whose probability sums to at
    /// least P (always at least one token). 1 (the default) turns it off.
    /// </summary>
    public double TopP { get; init; } = 1.0;

    /// <summary>
    /// Seed of the job's random stream. Null (the default) lets <c>Sampler</c> pick one at
    /// random; it is exposed as <c>Sampler.Seed</c> so the job can still be moved and replayed.
    /// </summary>
    public long? Seed { get; init; }

    /// <summary>Upper bound on generated tokens. Default 64.</summary>
    public int MaxNewTokens { get; init; } = 64;

    /// <summary>Token ids that end generation (the stop token is part of the output). Default none.</summary>
    public IReadOnlyList<int> StopTokenIds { get; init; } = [];

    /// <summary>True when decoding is greedy (temperature 0); top-k, top-p and seed are then ignored.</summary>
    public bool IsGreedy => Temperature == 0;

    /// <summary>Every problem with these options, each as one sentence; empty when they are valid.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (double.IsNaN(Temperature) || double.IsInfinity(Temperature) || Temperature < 0)
            errors.Add($"temperature must be a finite number >= 0 (0 = greedy), got {Temperature}");
        if (TopK < 0)
            errors.Add($"top-k must be >= 0 (0 = off), got {TopK}");
        if (double.IsNaN(TopP) || TopP <= 0 || TopP > 1)
            errors.Add($"top-p must be in (0, 1] (1 = off), got {TopP}");
        if (MaxNewTokens < 1)
            errors.Add($"max-new-tokens must be >= 1, got {MaxNewTokens}");
        if (StopTokenIds is null)
            errors.Add("stop token ids must not be null (use an empty list)");
        else
        {
            foreach (int t in StopTokenIds.Where(t => t < 0).Take(1))
                errors.Add($"stop token ids must be >= 0, got {t}");
        }
        return errors;
    }

    /// <summary>Throws one <see cref="ArgumentException"/> listing every problem, if there is any.</summary>
    public void EnsureValid()
    {
        var errors = Validate();
        if (errors.Count > 0)
            throw new ArgumentException("invalid sampling options: " + string.Join("; ", errors));
    }
}
