using Swarm.Checkpoints;
using Swarm.Cli;
using Swarm.Node;
using Swarm.Sampling;
using Swarm.Tokenization;
using Xunit;

namespace Swarm.Tests.Integration;

/// <summary>
/// What the speculative swarm tests (prompt lookup, draft model) share on codelm-tiny: the plain single-process greedy
/// reference, and the scenario "the last-stage node dies mid-job, the output stays what plain decoding gives".
/// </summary>
internal static class CodeLmScenarios
{
    /// <summary>The prompt's token ids and the tokens plain greedy decoding in one process gives after it.</summary>
    public static (long[] Prompt, int[] Plain) PlainGreedy(string prompt, int maxNew)
    {
        string dir = BuiltInModels.CodeLmTiny;
        var tokenizer = TokenizerLoader.TryLoad(dir) ?? throw new InvalidOperationException($"no tokenizer in {dir}");
        var ids = tokenizer.Encode(prompt);
        using var ckpt = Checkpoint.Open(dir);
        using var pipeline = LocalPipeline.Load(ckpt);
        var result = pipeline.Generate(ids, new SamplingOptions { Temperature = 0, MaxNewTokens = maxNew });
        return ([.. ids.Select(t => (long)t)], [.. result.TokenIds]);
    }

    /// <summary>
    /// Streams a 120-token greedy job through a two-stage swarm (whose nodes must answer slowly enough, ≥ 30 ms a pass,
    /// that the job is still running at the kill), adds a spare node, kills node-2 (the last stage) mid-job, and asserts
    /// the job finishes by length with exactly the plain tokens after at least one recovery.
    /// </summary>
    public static async Task LastStageKilledMidJob_OutputIdenticalToPlainAsync(LocalSwarmOptions twoStages, string promptText, Action<string> log)
    {
        const int n = 120;
        var (prompt, plain) = PlainGreedy(promptText, n);
        await using var swarm = await LocalSwarm.StartAsync(twoStages, log);
        var firstToken = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int seen = 0;
        var job = SwarmClient.StreamAsync(swarm.HttpUrl, prompt, n, (i, _) =>
        {
            Volatile.Write(ref seen, i + 1);
            firstToken.TrySetResult();
            return Task.CompletedTask;
        });
        await firstToken.Task.WaitAsync(TimeSpan.FromSeconds(60));
        swarm.AddNode(memory: "2GB");
        await Task.Delay(800);
        int atKill = Volatile.Read(ref seen);
        swarm.KillNode(1);
        log($"killed node-2 (the last stage) after {atKill} tokens");

        var (tokens, finish, _) = await job;

        Assert.True(atKill < n, "the job ended before the kill");
        Assert.Equal("length", finish);
        Assert.Equal(plain, tokens.Select(t => (int)t));
        var status = (await swarm.GetJsonAsync("/api/swarm"))!;
        Assert.True((long)status["recoveries"]! >= 1, "the kill did not make the job recover");
    }
}
