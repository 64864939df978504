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
    /// <summary>
    /// Single-position steps (decodes) in groups that attend together; empty when there are none. Decodes of similar
    /// lengths share a group (one gather, one attention call); lengths far apart go to separate groups, so a short
    /// sequence is not padded to a long one's length (see <see cref="Partition"/>).
    /// </summary>
    public IReadOnlyList<DecodeGroup> DecodeGroups { get; init; } = [];
    /// <summary>Multi-position steps (prefill chunks), each with its own causal attention.</summary>
    public required IReadOnlyList<Chunk> Chunks { get; init; }

    /// <param name="Offset">First row in the batch.</param>
    /// <param name="Rows">Number of rows (positions) of the chunk.</param>
    /// <param name="Length">Positions the chunk attends to (0 … last), L.</param>
    /// <param name="Slots">Their slots, int64 [L]; null when they are the contiguous range from <paramref name="Start"/>.</param>
    /// <param name="Start">First slot of a contiguous sequence (then no gather is needed).</param>
    /// <param name="Mask">[Rows, L] causal mask (true = attend).</param>
    internal sealed record Chunk(int Offset, int Rows, int Length, Tensor? Slots, long Start, Tensor Mask);

    /// <summary>Decodes that attend in one call, each over a window of <paramref name="Length"/> positions.</summary>
    /// <param name="Rows">Their rows in the batch, int64 [n].</param>
    /// <param name="Count">n.</param>
    /// <param name="Length">Positions each attends to: the group's longest (Length + 1); shorter ones are padded and masked.</param>
    /// <param name="Slots">Their slots, n windows of <paramref name="Length"/>, int64 [n · Length]; null when they are read as
    /// strided windows of the storage: decode d over the slots [Start + d·Stride, + Length) — every decode of the group at the
    /// same length over consecutive blocks (a session alone on a node, or equal sessions reserved up front), copying nothing.</param>
    /// <param name="Start">First slot of the first strided window.</param>
    /// <param name="Stride">Slots between consecutive strided windows.</param>
    /// <param name="Mask">[n, 1, 1, Length] bool (true = attend); null when no decode of the group is padded.</param>
    internal sealed record DecodeGroup(Tensor Rows, int Count, int Length, Tensor? Slots, long Start, long Stride, Tensor? Mask);

    /// <summary>
    /// The plan of one step: item i brings <paramref name="rows"/>[i] new positions at rows [offsets[i], +rows[i]) of the
    /// batch. Tensors are made in the caller's dispose scope, on the CPU. <paramref name="maxPadding"/>: see <see cref="Partition"/>.
    /// </summary>
    public static BatchPlan Build(IReadOnlyList<BatchItem> items, int[] rows, int[] offsets, int total, long maxPadding)
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
        return new BatchPlan
        {
            Positions = tensor(positions, ScalarType.Int64),
            Slots = tensor(slots, ScalarType.Int64),
            Chunks = chunks,
            DecodeGroups = decodes.Count == 0 ? [] : Partition(items, decodes, maxPadding).Select(g => Group(items, g, offsets)).ToArray(),
        };
    }

    /// <summary>
    /// Splits decodes (item indices) into groups by length. Sorted by length, a decode joins the current group unless that
    /// would pad the group's decodes by more than <paramref name="maxPadding"/> positions in all; then it starts a new one.
    /// A group costs a few extra ops per layer, so splitting pays only once the padding it saves is worth more positions than
    /// those ops cost. A single group keeps the batch order (its rows then are the whole batch, read without reordering).
    /// </summary>
    internal static List<List<int>> Partition(IReadOnlyList<BatchItem> items, List<int> decodes, long maxPadding)
    {
        var sorted = decodes.OrderBy(i => items[i].Kv.Length).ToList(); // stable
        var groups = new List<List<int>> { new() { sorted[0] } };
        int longest = items[sorted[0]].Kv.Length;
        foreach (int i in sorted.Skip(1))
        {
            int length = items[i].Kv.Length;
            if ((long)groups[^1].Count * (length - longest) > maxPadding) groups.Add([]);
            groups[^1].Add(i);
            longest = length;
        }
        return groups.Count == 1 ? [decodes] : groups;
    }

    private static DecodeGroup Group(IReadOnlyList<BatchItem> items, List<int> decodes, int[] offsets)
    {
        var rows = tensor(decodes.Select(i => (long)offsets[i]).ToArray(), ScalarType.Int64);
        if (Windows(items, decodes) is (long start, long stride, int length))
            return new DecodeGroup(rows, decodes.Count, length, null, start, stride, null);
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
        return new DecodeGroup(rows, decodes.Count, decodeLength, tensor(table, ScalarType.Int64), 0, 0,
            padded ? tensor(mask, ScalarType.Bool).view(decodes.Count, 1, 1, decodeLength) : null);
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
        DecodeGroups = DecodeGroups.Select(g => g with { Rows = g.Rows.to(device), Slots = g.Slots?.to(device), Mask = g.Mask?.to(device) }).ToArray(),
        Chunks = Chunks.Select(c => c with { Slots = c.Slots?.to(device), Mask = c.Mask.to(device) }).ToArray(),
    };
}
