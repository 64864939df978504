using Swarm.Checkpoints;
using Swarm.Engine;
using Swarm.Model;
using Swarm.Node;
using Swarm.Protocol;
using Swarm.Tests.Model;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Swarm.Tests.Node;

/// <summary>
/// Two in-process <see cref="StageHost"/>s (the halves of a fixture model) run a prefill that asks for the prompt's
/// logprobs (echo) and every layer's hidden states, with prefill chunks far smaller than the prompts, so scoring and
/// capture are stitched across chunks and stages. The HF reference is the judge.
/// </summary>
public class StageHostReadoutTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(Fixture.Tiny, 7)]
    [InlineData(Fixture.Small, 16)]
    public void ChunkedPrefillOverTwoStages_PromptLogprobsAndHiddenStates_MatchTheHfReference(string name, int chunk)
    {
        using var fx = new Fixture(name);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        int layers = ckpt.Config.NumLayers, split = layers / 2;
        var batching = new BatchingOptions { PrefillChunk = chunk, MaxBatchTokens = 2 * chunk };
        using var first = new StageHost(StageModel.Load(ckpt, 0, split), 64L << 20, batching: batching);
        using var second = new StageHost(StageModel.Load(ckpt, split, layers), 64L << 20, batching: batching);
        Hop[] route =
        [
            new Hop { NodeId = 1, Endpoint = "a:1", Layers = new LayerRange(0, split) },
            new Hop { NodeId = 2, Endpoint = "b:2", Layers = new LayerRange(split, layers) },
        ];
        double worstLogprob = 0, worstHidden = 0;
        for (int p = 0; p < fx.PromptCount; p++)
        {
            long[] prompt = fx.Ids($"prompt.{p}");
            var request = new ForwardRequest
            {
                JobId = 1, SessionId = p + 1, Kind = StepKind.Prefill, Input = WireTensor.FromTokenIds(prompt), Route = route,
                WireDType = WireDType.F32, Sampling = new SamplingParams { Temperature = 0 },
                Logprobs = new LogprobsRequest { Top = 5, ScoredTokenIds = [.. prompt.Skip(1).Select(t => (int)t)] },
                HiddenStates = new HiddenStatesRequest { Layers = [.. Enumerable.Range(0, layers)], AllPositions = true },
            };
            var mid = first.Run(request);
            Assert.Null(mid.Logprobs);
            Assert.Equal(Enumerable.Range(0, split), mid.HiddenStates.Select(h => h.Layer));   // only its own layers
            var last = second.Run(request with
            {
                Route = route[1..], Input = WireDTypeConversion.Convert(mid.Hidden!, WireDType.F32), CapturedHiddenStates = mid.HiddenStates,
            });
            Assert.Equal(Enumerable.Range(split, layers - split), last.HiddenStates.Select(h => h.Layer));

            using var scope = NewDisposeScope();
            var logp = fx.Ref($"logits.{p}").log_softmax(-1);
            Assert.Equal(prompt.Length - 1, last.InputLogprobs.Length);
            long greedy = fx.Ids($"greedy.{p}")[0];
            Assert.Equal((int)greedy, last.Token);
            var scored = last.InputLogprobs.Append(last.Logprobs!).ToArray();
            for (int i = 0; i < scored.Length; i++)
            {
                long chosen = i < prompt.Length - 1 ? prompt[i + 1] : greedy;
                worstLogprob = Math.Max(worstLogprob, Math.Abs(scored[i].Logprob - logp[i, chosen].item<float>()));
                var (values, ids) = logp[i].topk(5);
                Assert.Equal(ids.data<long>().ToArray().Select(v => (int)v), scored[i].TopIds);
                var want = values.data<float>().ToArray();
                for (int k = 0; k < 5; k++) worstLogprob = Math.Max(worstLogprob, Math.Abs(scored[i].TopLogprobs[k] - want[k]));
            }
            foreach (var h in mid.HiddenStates.Concat(last.HiddenStates))
            {
                Assert.Equal(new long[] { prompt.Length, ckpt.Config.HiddenSize }, h.Data.Shape);
                var got = WireTensorConversion.ToTensor(h.Data);
                var want = fx.Ref($"hidden.{p}.{h.Layer}");
                double scale = name == Fixture.Tiny ? 1 : want.abs().max().item<float>();   // README: fp16 fixture relative to the tensor's max
                worstHidden = Math.Max(worstHidden, (got - want).abs().max().item<float>() / scale);
            }
            first.Close(p + 1);
            second.Close(p + 1);
        }
        output.WriteLine($"{name}: max |Δlogprob| {worstLogprob:E2}, max |Δhidden| {worstHidden:E2}");
        Assert.True(worstLogprob <= fx.LogitTolerance, $"max |Δlogprob| {worstLogprob} > {fx.LogitTolerance}");
        Assert.True(worstHidden <= 1e-4, $"max |Δhidden| {worstHidden} > 1e-4");
    }

    [Fact]
    public void ScoredAndCapturedPrefills_LeaveNoLiveTensorsBehind()
    {
        // Tensor statistics are per thread: a fresh thread counts only this test's tensors.
        long after10 = 0, after40 = 0;
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var fx = new Fixture(Fixture.Tiny);
                using var ckpt = Checkpoint.Open(fx.CheckpointDir);
                using var host = new StageHost(StageModel.Load(ckpt, 0, ckpt.Config.NumLayers), 64L << 20,
                    batching: new BatchingOptions { PrefillChunk = 7, MaxBatchTokens = 14 });
                long[] prompt = fx.Ids("prompt.2");
                var stats = TorchSharp.DisposeScopeManager.Statistics;
                for (int i = 0; i < 40; i++)
                {
                    host.Run(new ForwardRequest
                    {
                        JobId = 1, SessionId = i + 1, Kind = StepKind.Prefill, Input = WireTensor.FromTokenIds(prompt),
                        Route = [new Hop { NodeId = 1, Endpoint = "a:1", Layers = new LayerRange(0, ckpt.Config.NumLayers) }],
                        Sampling = new SamplingParams { Temperature = 0.8, Seed = 3 },
                        Logprobs = new LogprobsRequest { Top = 3, ScoredTokenIds = [.. prompt.Skip(1).Select(t => (int)t)] },
                        HiddenStates = new HiddenStatesRequest { Layers = [0, 2], AllPositions = i % 2 == 0 },
                    });
                    host.Close(i + 1);
                    if (i == 9) after10 = stats.ThreadTotalLiveCount;
                    if (i == 39) after40 = stats.ThreadTotalLiveCount;
                }
            }
            catch (Exception e) { error = e; }
        });
        thread.Start();
        thread.Join();
        Assert.Null(error);
        Assert.Equal(after10, after40);
    }

    [Fact]
    public void LastPositionOnly_CapturesOneRowPerLayer_TheLastPromptPosition()
    {
        using var fx = new Fixture(Fixture.Tiny);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        using var host = new StageHost(StageModel.Load(ckpt, 0, ckpt.Config.NumLayers), 64L << 20, batching: new BatchingOptions { PrefillChunk = 5, MaxBatchTokens = 10 });
        long[] prompt = fx.Ids("prompt.2");
        var output = host.Run(new ForwardRequest
        {
            JobId = 1, SessionId = 1, Kind = StepKind.Prefill, Input = WireTensor.FromTokenIds(prompt),
            Route = [new Hop { NodeId = 1, Endpoint = "a:1", Layers = new LayerRange(0, ckpt.Config.NumLayers) }],
            Sampling = new SamplingParams { Temperature = 0 },
            HiddenStates = new HiddenStatesRequest { Layers = [1, 3], AllPositions = false },
        });
        Assert.Null(output.Logprobs);   // not asked for
        Assert.Empty(output.InputLogprobs);
        Assert.Equal([1, 3], output.HiddenStates.Select(h => h.Layer));
        using var scope = NewDisposeScope();
        foreach (var h in output.HiddenStates)
        {
            Assert.Equal(new long[] { 1, ckpt.Config.HiddenSize }, h.Data.Shape);
            var want = fx.Ref($"hidden.2.{h.Layer}")[^1];
            Assert.True((WireTensorConversion.ToTensor(h.Data)[0] - want).abs().max().item<float>() <= 1e-4);
        }
    }
}
