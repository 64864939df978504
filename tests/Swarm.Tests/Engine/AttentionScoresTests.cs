using Swarm.Model;
using Xunit;

namespace Swarm.Tests.Engine;

/// <summary>
/// <see cref="DecodeKernels.Scores{TStore}"/> (four positions at a time) against one <see cref="IKvStore.Dot"/> per
/// position — the form it replaced — bit for bit, in f32 and bf16 stores, over lengths that end in every remainder and
/// head sizes with and without the four-position path; and <see cref="DecodeKernels.AttendHeads{TStore}"/> (all heads of
/// a sequence, row by row) against <see cref="DecodeKernels.Attend{TStore}"/> head by head, bit for bit.
/// </summary>
public unsafe class AttentionScoresTests
{
    [Theory]
    [InlineData(64)]
    [InlineData(80)]
    [InlineData(20)] // not a multiple of 8: every position through Dot
    public void Scores_SameBitsAsOneDotPerPosition(int hd)
    {
        const int slotsInStore = 40, rowStride = 3 * 96;
        var random = new Random(hd);
        var store32 = new float[slotsInStore * rowStride];
        for (int i = 0; i < store32.Length; i++) store32[i] = (float)(random.NextDouble() * 2 - 1);
        var store16 = store32.Select(DecodeKernels.F32ToBf16).ToArray();
        var q = Enumerable.Range(0, hd).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        var slots = Enumerable.Range(0, slotsInStore).OrderBy(_ => random.Next()).Select(s => (long)s).ToArray();
        fixed (float* qp = q, k32 = store32)
        fixed (ushort* k16 = store16)
        fixed (long* sp = slots)
            for (int length = 1; length <= 13; length++)
            {
                Check<F32KvStore>(qp, hd, k32, sp, length, rowStride);
                Check<Bf16KvStore>(qp, hd, k16, sp, length, rowStride);
            }
    }

    private static void Check<TStore>(float* q, int hd, void* keys, long* slots, int length, long rowStride) where TStore : struct, IKvStore
    {
        const float scale = 0.125f;
        var scores = new float[length];
        float max;
        fixed (float* s = scores) max = DecodeKernels.Scores<TStore>(q, hd, keys, slots, length, rowStride, scale, s);
        float expectedMax = float.NegativeInfinity;
        for (int p = 0; p < length; p++)
        {
            float expected = TStore.Dot(q, keys, slots[p] * rowStride, hd) * scale;
            Assert.Equal(BitConverter.SingleToInt32Bits(expected), BitConverter.SingleToInt32Bits(scores[p]));
            if (expected > expectedMax) expectedMax = expected;
        }
        Assert.Equal(expectedMax, max);
    }

    [Theory]
    [InlineData(64, 12)]  // pythia-160m
    [InlineData(128, 4)]  // the head sizes of the larger Pythia models
    [InlineData(256, 2)]
    [InlineData(80, 8)]   // two 32-dim blocks and a tail, heads a multiple of 4
    [InlineData(80, 5)]   // heads not a multiple of 4
    [InlineData(20, 3)]   // not a multiple of 8: every score through Dot, every output through the tail
    public void AttendHeads_SameBitsAsAttendHeadByHead(int hd, int heads)
    {
        int rowStride = heads * hd, slotsInStore = 40;
        var random = new Random(hd * 100 + heads);
        var keys = Enumerable.Range(0, slotsInStore * rowStride).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        var values = Enumerable.Range(0, slotsInStore * rowStride).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        var keys16 = keys.Select(DecodeKernels.F32ToBf16).ToArray();
        var values16 = values.Select(DecodeKernels.F32ToBf16).ToArray();
        // Queries laid out as the decode's q/k/v rows: head j's query at j·3·hd.
        var q = Enumerable.Range(0, 3 * rowStride).Select(_ => (float)(random.NextDouble() * 4 - 2)).ToArray();
        var slots = Enumerable.Range(0, slotsInStore).OrderBy(_ => random.Next()).Select(s => (long)s).ToArray();
        fixed (float* qp = q, k32 = keys, v32 = values)
        fixed (ushort* k16 = keys16, v16 = values16)
        fixed (long* sp = slots)
            foreach (int length in new[] { 1, 2, 3, 4, 9, 40 })
            {
                CheckHeads<F32KvStore>(qp, hd, heads, k32, v32, sp, length, rowStride, sizeof(float));
                CheckHeads<Bf16KvStore>(qp, hd, heads, k16, v16, sp, length, rowStride, sizeof(ushort));
            }
    }

    private static void CheckHeads<TStore>(float* q, int hd, int heads, void* keys, void* values, long* slots, int length, int rowStride, int elementSize)
        where TStore : struct, IKvStore
    {
        const float scale = 0.125f;
        var together = new float[heads * hd];
        var scores = new float[heads * length];
        fixed (float* o = together, s = scores)
            DecodeKernels.AttendHeads<TStore>(q, 3 * hd, heads, hd, keys, values, slots, length, rowStride, scale, s, o);
        var one = new float[hd];
        var scratch = new float[length];
        for (int j = 0; j < heads; j++)
        {
            long offset = (long)j * hd * elementSize;
            fixed (float* o = one, s = scratch)
                DecodeKernels.Attend<TStore>(q + j * 3 * hd, hd, (byte*)keys + offset, (byte*)values + offset, slots, length, rowStride, scale, s, o);
            for (int d = 0; d < hd; d++)
                Assert.Equal(BitConverter.SingleToInt32Bits(one[d]), BitConverter.SingleToInt32Bits(together[j * hd + d]));
        }
    }
}
