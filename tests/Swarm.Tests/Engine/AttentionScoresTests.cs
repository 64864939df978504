using Swarm.Model;
using Xunit;

namespace Swarm.Tests.Engine;

/// <summary>
/// <see cref="DecodeKernels.Scores{TStore}"/> (four positions at a time) against one <see cref="IKvStore.Dot"/> per
/// position — the form it replaced — bit for bit, in f32 and bf16 stores, over lengths that end in every remainder and
/// head sizes with and without the four-position path.
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
}
