using TorchSharp;
using static TorchSharp.torch;

namespace Swarm.Model;

/// <summary>
/// One sequence's part of a batched step (<see cref="StageModel.ForwardBatch"/>): its new positions' input —
/// token ids (any shape, t elements) for the first stage, hidden states (any shape ending in hidden size) for
/// later ones — and its KV sequence, which must already hold blocks for Length + t positions.
/// </summary>
/// <param name="WantLogits">On the last stage: compute logits (false for a prefill chunk that is not the prompt's
/// last, which needs none).</param>
/// <param name="AllPositions">On the last stage: the logits of every new position [t, V] rather than of the last [V]
/// (scoring a prompt, verifying a run of speculative tokens). Ignored on other stages, which return every position.</param>
/// <param name="CaptureLayers">Layers (global 0-based indices) whose output — before the final LayerNorm — is returned for
/// this item's new positions (see <see cref="StageModel.ForwardBatchCapturing"/>);
/// layers outside the call's range are ignored. Null for none.</param>
public sealed record BatchItem(Tensor Input, KvSequence Kv, bool WantLogits = true, bool AllPositions = false,
    IReadOnlyCollection<int>? CaptureLayers = null);

/// <summary>The output of one transformer layer for one batch item's new positions: f32 [t, H] on the CPU, owned by the caller.</summary>
/// <param name="Layer">The layer (global 0-based index).</param>
/// <param name="Hidden">Its output, before the final LayerNorm (HF's <c>hidden_states[Layer + 1]</c>).</param>
public sealed record CapturedLayer(int Layer, Tensor Hidden);

/// <summary>Where a batch's rows go and whom they attend to; built once per batched step, shared by its layers.</summary>
internal sealed class BatchPlan
{
    /// <summary>Position of every row, int64 [N].</summary>
    public required Tensor Positions { get; init; }
    /// <summary>Pool slot each row's key/value is written to, int64 [N].</summary>
    public required Tensor Slots { get; init; }
    /// <summary>Rows of the single-position steps (decodes), int64 [m]; null when there are none.</summary>
    public Tensor? DecodeRows { get; init; }
    /// <summary>Slots the decodes attend to, padded to <see cref="DecodeLength"/> each, int64 [m · DecodeLength]; null when
    /// the decodes read strided windows of the storage (<see cref="DecodeStart"/>).</summary>
    public Tensor? DecodeSlots { get; init; }
    /// <summary>
    /// Without <see cref="DecodeSlots"/>: decode d attends to the contiguous slots [DecodeStart + d·DecodeStride,
    /// + DecodeLength) — every decode at the same length over consecutive blocks (a session alone on a node, or equal
    /// sessions reserved up front), read as one strided view, copying nothing.
    /// </summary>
    public long DecodeStart { get; init; }
    /// <summary>Slots between the windows of consecutive decodes (see <see cref="DecodeStart"/>).</summary>
    public long DecodeStride { get; init; }
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

    /// <summary>
    /// The plan of one step: item i brings <paramref name="rows"/>[i] new positions at rows [offsets[i], +rows[i]) of the
    /// batch. Tensors are made in the caller's dispose scope, on the CPU.
    /// </summary>
    public static BatchPlan Build(IReadOnlyList<BatchItem> items, int[] rows, int[] offsets, int total)
    {
        var positions = new long[total];
        var slots = new long[total];
        var decodes = new List<int>();
        var chunks = new List<Chunk>();
        for (int i = 0; i < items.Count; i++)
        {
            var kv = items[i].Kv;
            for (int j = 0; j < rows[i]; j++)
            {
                positions[offsets[i] + j] = kv.Length + j;
                slots[offsets[i] + j] = kv.Slot(kv.Length + j);
            }
            if (rows[i] == 1) { decodes.Add(i); continue; }
            int len = kv.Length + rows[i];
            Tensor? seqSlots = null;
            long start = kv.ContiguousStart ?? -1;
            if (start < 0)
            {
                var list = new long[len];
                for (int p = 0; p < len; p++) list[p] = kv.Slot(p);
                seqSlots = tensor(list, ScalarType.Int64);
            }
            // query j (absolute position Length + j) sees keys ≤ its position
            chunks.Add(new Chunk(offsets[i], rows[i], len, seqSlots, start, ones([rows[i], len], ScalarType.Bool).tril(kv.Length)));
        }
        var plan = new BatchPlan
        {
            Positions = tensor(positions, ScalarType.Int64),
            Slots = tensor(slots, ScalarType.Int64),
            Chunks = chunks,
        };
        return decodes.Count == 0 ? plan : WithDecodes(plan, items, decodes, offsets);
    }

    private static BatchPlan WithDecodes(BatchPlan plan, IReadOnlyList<BatchItem> items, List<int> decodes, int[] offsets)
    {
        var decodeRows = tensor(decodes.Select(i => (long)offsets[i]).ToArray(), ScalarType.Int64);
        if (Windows(items, decodes) is (long start, long stride, int length))
            return new BatchPlan
            {
                Positions = plan.Positions, Slots = plan.Slots, Chunks = plan.Chunks,
                DecodeRows = decodeRows, DecodeStart = start, DecodeStride = stride, DecodeLength = length,
            };
        int decodeLength = decodes.Max(i => items[i].Kv.Length + 1);
        var table = new long[decodes.Count * decodeLength];
        var mask = new bool[decodes.Count * decodeLength];
        bool padded = false;
        for (int d = 0; d < decodes.Count; d++)
        {
            var kv = items[decodes[d]].Kv;
            int len = kv.Length + 1;
            padded |= len < decodeLength;
            for (int p = 0; p < decodeLength; p++)
            {
                // Padding points at the sequence's own position 0 (real data) and is masked out.
                table[d * decodeLength + p] = kv.Slot(p < len ? p : 0);
                mask[d * decodeLength + p] = p < len;
            }
        }
        return new BatchPlan
        {
            Positions = plan.Positions, Slots = plan.Slots, Chunks = plan.Chunks,
            DecodeRows = decodeRows, DecodeSlots = tensor(table, ScalarType.Int64), DecodeLength = decodeLength,
            DecodeMask = padded ? tensor(mask, ScalarType.Bool).view(decodes.Count, 1, 1, decodeLength) : null,
        };
    }

    /// <summary>
    /// (first slot, stride, length) when every decode is at the same length over consecutive blocks and their first slots
    /// step by one positive stride, so that one strided view covers exactly their positions; null otherwise.
    /// </summary>
    private static (long Start, long Stride, int Length)? Windows(IReadOnlyList<BatchItem> items, List<int> decodes)
    {
        var first = items[decodes[0]].Kv;
        if (first.ContiguousStart is not long start) return null;
        int length = first.Length + 1;
        if (decodes.Count == 1) return (start, length, length);
        long stride = 0;
        for (int d = 1; d < decodes.Count; d++)
        {
            var kv = items[decodes[d]].Kv;
            if (kv.Length + 1 != length || kv.ContiguousStart is not long s) return null;
            if (d == 1) stride = s - start;
            if (stride <= 0 || s != start + d * stride) return null;
        }
        return (start, stride, length);
    }

    /// <summary>This plan with its tensors on <paramref name="device"/> (the plan itself on the CPU), made in the caller's scope.</summary>
    public BatchPlan On(Device device) => device.type == DeviceType.CPU ? this : new BatchPlan
    {
        Positions = Positions.to(device),
        Slots = Slots.to(device),
        DecodeRows = DecodeRows?.to(device),
        DecodeSlots = DecodeSlots?.to(device),
        DecodeStart = DecodeStart, DecodeStride = DecodeStride, DecodeLength = DecodeLength,
        DecodeMask = DecodeMask?.to(device),
        Chunks = Chunks.Select(c => c with { Slots = c.Slots?.to(device), Mask = c.Mask.to(device) }).ToArray(),
    };
}
