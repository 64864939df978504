namespace Swarm.Node;

/// <summary>Iteration-level batching settings of a <see cref="StageHost"/> (and its <see cref="Scheduling.BatchScheduler{T}"/>).</summary>
public sealed record BatchingOptions
{
    /// <summary>Positions per KV block (default 16).</summary>
    public int BlockSize { get; init; } = Swarm.Model.KvBlockPool.DefaultBlockSize;
    /// <summary>Most new positions (decodes + prefill chunks) one iteration runs (default 256).</summary>
    public int MaxBatchTokens { get; init; } = 256;
    /// <summary>Longest prefill chunk (default 128): longer prompts are split so running decodes are not stalled.</summary>
    public int PrefillChunk { get; init; } = 128;
    /// <summary>
    /// Least prefill positions an iteration that also runs decodes takes (default 16). While decodes run, an iteration's
    /// prefill share is the largest of this, the number of decodes, and the queued prefill positions ÷
    /// <see cref="PrefillSpread"/>: on a CPU an iteration's time grows with its rows, so a whole <see cref="PrefillChunk"/>
    /// beside a few decodes would stall them, while a steady share keeps their inter-token gaps even and still keeps up
    /// with arriving prompts. Without decodes, prefills take <see cref="PrefillChunk"/> and <see cref="MaxBatchTokens"/> as
    /// usual. At or above <see cref="MaxBatchTokens"/>: no limit.
    /// </summary>
    public int MinPrefillWhileDecoding { get; init; } = 16;
    /// <summary>Iterations over which queued prefill positions are spread while decodes run (default 4; see <see cref="MinPrefillWhileDecoding"/>).</summary>
    public int PrefillSpread { get; init; } = 4;
    /// <summary>
    /// Free blocks a new session must leave per running session so those can keep growing (default 1); lower means
    /// more sessions at once but more preemptions when they all grow.
    /// </summary>
    public int AdmissionHeadroomBlocks { get; init; } = 1;
    /// <summary>
    /// When nothing can run for lack of KV blocks while some sessions holding blocks are busy elsewhere (their step is
    /// on another stage, and may free or need blocks when it returns), how long to wait before preempting anyway
    /// (default 2 s). When every such session is here and blocked, preemption is immediate.
    /// </summary>
    public TimeSpan PreemptAfter { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>Throws <see cref="ArgumentException"/> when a setting is out of range.</summary>
    public void Validate()
    {
        if (BlockSize < 1 || MaxBatchTokens < 1 || PrefillChunk < 1 || MinPrefillWhileDecoding < 1 || PrefillSpread < 1 || AdmissionHeadroomBlocks < 0 || PreemptAfter < TimeSpan.Zero)
            throw new ArgumentException("batching: block size, batch tokens, prefill chunk, prefill while decoding and prefill spread must be ≥ 1, admission headroom and preempt-after ≥ 0");
    }
}
