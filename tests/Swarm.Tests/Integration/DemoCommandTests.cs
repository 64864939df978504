using System.Text.RegularExpressions;
using Xunit;
using Xunit.Abstractions;

namespace Swarm.Tests.Integration;

/// <summary><c>swarm demo</c> as a person runs it: real processes, the model that ships with the CLI, streamed code.</summary>
[Collection("processes")]
public class DemoCommandTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Demo_ByDefault_StreamsPythonFromTheShippedCodeModel()
    {
        var (exit, stdout, stderr) = await CliProcess.RunAsync(SwarmProgram.Cli, TimeSpan.FromMinutes(4),
            "demo", "--nodes", "2", "--max-new-tokens", "24", "--threads", "1");

        output.WriteLine($"exit {exit}\n{stdout}\n{stderr}");
        Assert.Equal(0, exit);
        Assert.Contains("for codelm-tiny (4 layers)", stderr);
        // The prompt, then the completion written after it as it streamed: text, not token ids.
        var completion = Regex.Match(stdout, @"streamed as the swarm writes it:\n\ndef fibonacci\(n\):(?<text>[\s\S]+?)\n\n24 tokens \(length\); per-stage forward per token: ");
        Assert.True(completion.Success, stdout);
        Assert.Matches(@"[a-z]", completion.Groups["text"].Value);
        Assert.DoesNotMatch(@"^(\s*\d+)+\s*$", completion.Groups["text"].Value);
        Assert.Matches(@"node-\d \[0,\d\) [0-9.]+ ms \| node-\d \[\d,4\) [0-9.]+ ms \| end to end", stdout);
    }
}
