using static TorchSharp.torch;

namespace Swarm.Model;

/// <summary>
/// One sequence's part of a batched step (<see cref="StageModel.ForwardBatch"/>): its new positions' input —
/// token ids (any shape, t elements) for the first stage, hidden states (any shape ending in hidden size) for
/// later ones — and its KV sequence, which must already hold blocks for Length + t positions.
/// </summary>
/// <param name="WantLogits">On the last stage: compute the logits of the last position (false for a prefill
/// chunk that is not the prompt's last, which needs no logits).</param>
public sealed record BatchItem(Tensor Input, KvSequence Kv, bool WantLogits = true);

/// <summary>Where a batch's rows go and whom they attend to; built once per batched step, shared by its layers.</summary>
internal sealed class BatchPlan
{
    /// <summary>Position of every row, int64 [N].</summary>
    public required Tensor Positions { get; init; }
    /// <summary>Pool slot each row's key/value is written to, int64 [N].</summary>
    public required Tensor Slots { get; init; }
    /// <summary>Rows of the single-position steps (decodes), int64 [m]; null when there are none.</summary>
    public Tensor? DecodeRows { get; init; }
    /// <summary>Slots the decodes attend to, padded to <see cref="DecodeLength"/> each, int64 [m · DecodeLength]; null when <see cref="DecodeStart"/> is set.</summary>
    public Tensor? DecodeSlots { get; init; }
    /// <summary>A single decode whose positions are one contiguous slot range starting here (read as a view, no gather).</summary>
    public long? DecodeStart { get; init; }
    /// <summary>[m, 1, 1, DecodeLength] bool (true = attend); null when no decode needs padding.</summary>
    public Tensor? DecodeMask { get; init; }
    public int DecodeLength { get; init; }
    /// <summary>Multi-position steps (prefill chunks), each with its own causal attention.</summary>
    public required IReadOnlyList<Chunk> Chunks { get; init; }

    /// <param name="Offset">First row in the batch.</param>
    /// <param name="Rows">Number of rows (positions) of the chunk.</param>
    /// <param name="Length">Positions the chunk attends to (0 … last), L.</param>
    /// <param name="Slots">Their slots, int64 [L]; null when they are the contiguous range from <paramref name="Start"/>.</param>
    /// <param name="Start">First slot of a contiguous sequence (then no gather is needed).</param>
    /// <param name="Mask">[Rows, L] causal mask (true = attend).</param>
    internal sealed record Chunk(int Offset, int Rows, int Length, Tensor? Slots, long Start, Tensor Mask);
}
