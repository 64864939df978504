using Swarm.Model;
using Xunit;
using static TorchSharp.torch;

namespace Swarm.Tests.Engine;

/// <summary>
/// <see cref="DecodeFork"/>'s products that read what the fork's attention writes (<c>afterAttention</c>): their chunks
/// wait for every pair, even when the pair holding them up runs long on the other core, and a pair that throws reaches
/// the caller instead of leaving a core waiting for ever. (On one core the fork runs in order and the wait is trivially
/// met; this machine kind has two.)
/// </summary>
public unsafe class DecodeForkTests
{
    [Fact]
    public void AfterAttention_ChunksWaitForTheSlowestPair_AndReadWhatItWrote()
    {
        using var scope = NewDisposeScope();
        const int inputs = 32, outputs = 64;
        var w = randn(outputs, inputs, generator: new Generator(21));
        var bias = randn(outputs, generator: new Generator(22));
        var written = randn(inputs, generator: new Generator(23));
        var expected = w.matmul(written) + bias;
        using var linear = LinearWeights.Create(w.clone(), bias.clone(), WeightFormat.F32, parallelism: 1);
        var x = new float[inputs];
        var y = new float[outputs];
        var source = written.data<float>().ToArray();
        var fork = new DecodeFork();
        for (int round = 0; round < 5; round++)
        {
            Array.Clear(x);
            fixed (float* xp = x, yp = y)
            {
                fork.Clear();
                // Pair 0 writes x after a pause; pair 1 is instant, so the core that takes it reaches the product first.
                fork.AddAttention(2, (pair, _) =>
                {
                    if (pair != 0) return;
                    Thread.Sleep(20);
                    source.CopyTo(x, 0);
                });
                fork.AddMatvec(linear, xp, 1, yp, afterAttention: true);
                fork.Run();
            }
            var got = tensor(y);
            Assert.True((got - expected).abs().max().item<float>() < 1e-4f * expected.abs().max().item<float>(), $"round {round}: read x before the attention wrote it");
        }
    }

    [Fact]
    public void AfterAttention_APairThrows_TheForkThrowsInsteadOfWaitingForIt()
    {
        using var scope = NewDisposeScope();
        using var linear = LinearWeights.Create(randn(64, 32, generator: new Generator(24)), null, WeightFormat.F32, parallelism: 1);
        var x = new float[32];
        var y = new float[64];
        var fork = new DecodeFork();
        fixed (float* xp = x, yp = y)
        {
            fork.Clear();
            fork.AddAttention(2, (pair, _) =>
            {
                if (pair != 0) return;
                Thread.Sleep(20);
                throw new InvalidOperationException("pair 0");
            });
            fork.AddMatvec(linear, xp, 1, yp, afterAttention: true);
            var e = Assert.ThrowsAny<Exception>(() => fork.Run());
            Assert.Contains("pair 0", e is AggregateException a ? a.InnerException!.Message : e.Message);
        }
    }
}
