using Swarm.Checkpoints;
using Swarm.Model;
using Xunit;

namespace Swarm.Tests.Model;

public class LoadProgressTests
{
    private sealed class Recorder : IProgress<(long Done, long Total)>
    {
        public List<(long Done, long Total)> Reports { get; } = [];
        public void Report((long Done, long Total) value) => Reports.Add(value);
    }

    [Fact]
    public void StageLoad_ReportsBytesRead_MonotonicallyUpToTheStageSize()
    {
        using var fx = new Fixture(Fixture.Small);
        using var ckpt = Checkpoint.Open(fx.CheckpointDir);
        var rec = new Recorder();
        using var stage = StageModel.Load(ckpt, 2, 6, progress: rec);
        Assert.Equal(4 + 1, rec.Reports.Count); // one per layer, one for the head
        Assert.All(rec.Reports, r => Assert.Equal(rec.Reports[0].Total, r.Total));
        Assert.True(rec.Reports.Zip(rec.Reports.Skip(1)).All(p => p.First.Done < p.Second.Done));
        Assert.Equal(rec.Reports[^1].Total, rec.Reports[^1].Done);
        Assert.Equal(ckpt.BytesRead, rec.Reports[^1].Done);
        // The console bar built on it ends at 100 %, with the stage's size.
        var text = new StringWriter();
        var bar = new ConsoleProgress("loading", text, interactive: false);
        foreach (var r in rec.Reports) bar.Report((r.Done, r.Total));
        string last = text.ToString().Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries)[^1];
        string size = (ckpt.BytesRead / 1e6).ToString("F1", System.Globalization.CultureInfo.InvariantCulture);
        Assert.StartsWith($"loading: 100.0%  {size} / {size} MB", last);
    }
}
