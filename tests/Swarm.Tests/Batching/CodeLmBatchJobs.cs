using Swarm.Checkpoints;
using Swarm.Cli;
using Swarm.Model;
using Swarm.Node;
using Swarm.Tokenization;

namespace Swarm.Tests.Batching;

/// <summary>
/// What the speculative batching tests (planted drafts, a draft model) share on codelm-tiny: three Python prompts as
/// staggered driver jobs, and the plain two-stage greedy decoding of them that speculation must reproduce.
/// </summary>
internal static class CodeLmBatchJobs
{
    /// <summary>Prompt chunking that splits the prompts into several chunks and batches them with decodes.</summary>
    public static readonly BatchingOptions Batching = new() { PrefillChunk = 8, MaxBatchTokens = 32 };

    private static readonly string[] Prompts =
        ["class Stack:\n    def __init__(self):\n", "import os\n\ndef main(argv):\n    ", "    for i in range(len(items)):\n"];

    /// <summary>codelm-tiny's tokenizer (shipped with the CLI).</summary>
    public static ITextTokenizer Tokenizer() =>
        TokenizerLoader.TryLoad(BuiltInModels.CodeLmTiny) ?? throw new InvalidOperationException($"no tokenizer in {BuiltInModels.CodeLmTiny}");

    /// <summary>The three prompts as jobs of <paramref name="maxNew"/> tokens arriving one iteration apart.</summary>
    public static List<DriverJob> Jobs(ITextTokenizer tokenizer, int maxNew) =>
        Prompts.Select((p, i) => new DriverJob([.. tokenizer.Encode(p).Select(t => (long)t)], maxNew, i)).ToList();

    /// <summary>The jobs' tokens from plain greedy decoding over two stages (layers split in half), no speculation.</summary>
    public static List<int>[] PlainTwoStages(Checkpoint ckpt, IReadOnlyList<DriverJob> jobs)
    {
        int n = ckpt.Config.NumLayers;
        using var a = new StageHost(StageModel.Load(ckpt, 0, n / 2), 64L << 20, batching: Batching);
        using var b = new StageHost(StageModel.Load(ckpt, n / 2, n), 64L << 20, batching: Batching);
        return new BatchDriver([a, b]).Run(jobs);
    }
}
