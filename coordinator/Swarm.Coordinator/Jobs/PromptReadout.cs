using Swarm.Protocol;
using Swarm.Tokenization;

namespace Swarm.Coordinator.Jobs;

/// <summary>
/// What a job reads from its prompt besides the next token: the echoed prompt (<see cref="JobSpec.Echo"/>) — its tokens,
/// their texts and, with <see cref="JobSpec.Logprobs"/>, their log-probabilities, scored by the last stage in the prefill
/// — and the hidden states the job asked for (<see cref="JobSpec.HiddenStates"/>), captured by the stages that run those
/// layers during the prefill. Says what each step must ask the route for, and takes the prefill's answer.
/// </summary>
internal sealed class PromptReadout
{
    private readonly JobSpec _spec;
    private readonly string[] _texts;
    private ShownToken[]? _echo;

    /// <param name="spec">The job.</param>
    /// <param name="tokenizer">Decodes the echoed prompt's tokens; without one their texts are empty.</param>
    public PromptReadout(JobSpec spec, ITextTokenizer? tokenizer)
    {
        _spec = spec;
        _texts = spec.Echo ? TextsOf(spec.Prompt, tokenizer) : [];
        if (spec.Echo && !ScoresPrompt) _echo = [.. spec.Prompt.Select((id, i) => new ShownToken(id, _texts[i], null))];
    }

    /// <summary>True when the prompt's forward pass is needed even without a new token (max_tokens 0): echo with logprobs, or hidden states.</summary>
    public bool NeedsPrefill => ScoresPrompt || _spec.HiddenStates is not null;

    private bool ScoresPrompt => _spec.Echo && _spec.Logprobs is not null;

    /// <summary>The echoed prompt once it is known (at once without logprobs, after the prefill with them); else null.</summary>
    public IReadOnlyList<ShownToken>? Echo => _echo;

    /// <summary>The hidden states the prefill returned, in layer order (empty until then, or when none were asked for).</summary>
    public IReadOnlyList<LayerHiddenStates> HiddenStates { get; private set; } = [];

    /// <summary>What a step of <paramref name="kind"/> asks the last stage to report: the sampled token's logprobs, and in the prefill the prompt's.</summary>
    public LogprobsRequest? LogprobsFor(StepKind kind) => _spec.Logprobs is int top
        ? new LogprobsRequest { Top = top, ScoredTokenIds = kind == StepKind.Prefill && ScoresPrompt ? [.. _spec.Prompt.Skip(1)] : [] }
        : null;

    /// <summary>The hidden states a step of <paramref name="kind"/> captures: the prefill's only.</summary>
    public HiddenStatesRequest? HiddenStatesFor(StepKind kind) => kind == StepKind.Prefill ? _spec.HiddenStates : null;

    /// <summary>Takes the prefill's result (every attempt's; the last one counts).</summary>
    /// <exception cref="JobFailedException">The route's answer lacks what was asked for (500).</exception>
    public void Read(TokenResult prefill)
    {
        if (ScoresPrompt)
        {
            if (prefill.InputLogprobs.Length != _spec.Prompt.Count - 1)
                throw new JobFailedException($"the last stage scored {prefill.InputLogprobs.Length} prompt tokens, not {_spec.Prompt.Count - 1}", 500, "logprobs_missing");
            _echo = [.. _spec.Prompt.Select((id, i) => new ShownToken(id, _texts[i], i == 0 ? null : prefill.InputLogprobs[i - 1]))];
        }
        if (_spec.HiddenStates is { } asked)
        {
            var got = prefill.HiddenStates.Select(h => h.Layer).ToArray();
            if (!got.SequenceEqual(asked.Layers))
                throw new JobFailedException($"the route returned hidden states of layers [{string.Join(", ", got)}], not [{string.Join(", ", asked.Layers)}]", 500, "hidden_states_missing");
            HiddenStates = prefill.HiddenStates;
        }
    }

    /// <summary>Each prompt token's text as an incremental decoder shows it; the decoder's tail goes to the last token.</summary>
    private static string[] TextsOf(IReadOnlyList<int> prompt, ITextTokenizer? tokenizer)
    {
        if (tokenizer is null) return [.. prompt.Select(_ => "")];
        var decoder = new IncrementalDecoder(tokenizer);
        var texts = prompt.Select(decoder.Push).ToArray();
        if (texts.Length > 0) texts[^1] += decoder.Flush();
        return texts;
    }
}
