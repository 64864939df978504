using Swarm.Cli;
using Swarm.Coordinator.Speculation;
using Swarm.Model;
using Xunit;

namespace Swarm.Tests.Coordinator.Speculation;

/// <summary>
/// The coordinator's side of draft-model speculation: which drafts a step carries (<see cref="JobSpeculation"/> in
/// <see cref="SpeculationMode.DraftModel"/>), how many it asks the last node for, the settings' checks, and the draft's
/// identity (<see cref="DraftModelIdentity"/>).
/// </summary>
public class ModelDraftingTests
{
    private static readonly SpeculationOptions Model = new() { Mode = SpeculationMode.DraftModel, DraftModel = "sha256:0123456789abcdef", MaxDraft = 4 };

    [Fact]
    public void Draft_IsTheLastNodesProposal_OnlyWhenItFollowsTheSequence_TrimmedToLengthAndRoom()
    {
        var job = new JobSpeculation(Model);
        int[] sequence = [1, 2, 3, 1, 2, 3, 1, 2];
        Assert.Empty(job.Draft(sequence, room: 10, modelDrafts: true));          // nothing drafted yet (the prefill)
        job.Drafted([3, 1, 2, 3, 9], after: sequence.Length);
        Assert.Equal([3, 1, 2, 3], job.Draft(sequence, room: 10, modelDrafts: true));   // k_max = 4
        Assert.Equal([3, 1], job.Draft(sequence, room: 2, modelDrafts: true));
        Assert.Empty(job.Draft([.. sequence, 3], room: 10, modelDrafts: true));  // drafted after another sequence
        // A last node without the draft model: prompt lookup, as with --speculative ngram.
        Assert.Equal([3, 1, 2, 3], job.Draft(sequence, room: 10, modelDrafts: false));
    }

    [Fact]
    public void DraftCount_IsOneMoreThanTheCurrentLength_UpToKmaxAndRoom_AndZeroWithoutTheModel()
    {
        var job = new JobSpeculation(Model);
        Assert.Equal(4, job.DraftCount(room: 10, modelDrafts: true));   // starts at k_max
        Assert.Equal(2, job.DraftCount(room: 2, modelDrafts: true));
        Assert.Equal(0, job.DraftCount(room: 10, modelDrafts: false));
        job.Accept([5, 6, 7, 8], token: 5, accepted: [5, 9]);           // one of four accepted: the length becomes 2
        Assert.Equal(3, job.DraftCount(room: 10, modelDrafts: true));
        Assert.Equal(0, new JobSpeculation(Model with { Mode = SpeculationMode.Ngram }).DraftCount(10, modelDrafts: true));
    }

    [Fact]
    public void Options_DraftModeAndDraftModelGoTogether()
    {
        Assert.Empty(Model.Validate());
        Assert.NotEmpty((Model with { DraftModel = "" }).Validate());
        Assert.NotEmpty(new SpeculationOptions { Mode = SpeculationMode.Ngram, DraftModel = "sha256:0123456789abcdef" }.Validate());
        Assert.Equal(SpeculationMode.DraftModel, SpeculationOptions.ParseMode("draft"));
    }

    [Fact]
    public void Identity_NamesTheContentNotTheFolder()
    {
        string copy = Path.Combine(Path.GetTempPath(), $"draft-copy-{Guid.NewGuid():N}");
        Directory.CreateDirectory(copy);
        try
        {
            foreach (var f in Directory.GetFiles(BuiltInModels.CodeLmTinyDraft)) File.Copy(f, Path.Combine(copy, Path.GetFileName(f)));
            string draft = DraftModelIdentity.Of(BuiltInModels.CodeLmTinyDraft);
            Assert.StartsWith("sha256:", draft);
            Assert.Equal(draft, DraftModelIdentity.Of(copy));
            Assert.NotEqual(draft, DraftModelIdentity.Of(BuiltInModels.CodeLmTiny));
        }
        finally { Directory.Delete(copy, recursive: true); }
    }
}
