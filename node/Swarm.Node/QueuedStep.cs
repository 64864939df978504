using Swarm.Engine;
using Swarm.Model;
using Swarm.Protocol;
using Swarm.Sampling;
using static TorchSharp.torch;

namespace Swarm.Node;

/// <summary>
/// The executor's side of a queued step (<see cref="StageHost"/>): its request, its input tensor, and what its chunks
/// produced so far — hidden states for the next hop, the layer outputs it was asked to capture, and on the last stage the
/// log-probabilities of its scored input tokens or the logits of the positions that verify a draft. Owns every tensor it holds.
/// </summary>
internal sealed class QueuedStep(ForwardRequest request, object? state, Tensor input, long submitted) : IDisposable
{
    private readonly List<Tensor> _outputs = [];
    private readonly SortedDictionary<int, List<Tensor>> _captured = [];
    private readonly List<TokenLogprobs> _inputLogprobs = [];
    private readonly List<Tensor> _verified = [];

    /// <summary>The step as it arrived.</summary>
    public ForwardRequest Request { get; } = request;
    /// <summary>The submitter's state, handed back with the completion.</summary>
    public object? State { get; } = state;
    /// <summary>Token ids [t] or hidden states [t, H], detached, owned.</summary>
    public Tensor Input { get; } = input;
    /// <summary>Timestamp of submission.</summary>
    public long Submitted { get; } = submitted;

    /// <summary>The fingerprint of the hidden states this step received (empty on the first stage, which receives token ids).</summary>
    public float[] InputFingerprint { get; init; } = [];

    /// <summary>Layers of this hop whose outputs the step captures (null for none).</summary>
    public IReadOnlyCollection<int>? CaptureLayers { get; } = CaptureLayersOf(request);

    /// <summary>True when the last stage reports the log-probabilities of the input's tokens (echo): every chunk then needs all its positions' logits.</summary>
    public bool ScoresInput => Request.Logprobs is { ScoredTokenIds.Length: > 0 };

    private static int[]? CaptureLayersOf(ForwardRequest request)
    {
        if (request.HiddenStates is not { } hs || request.Route.Length == 0) return null;
        var hop = request.Route[0].Layers;
        int[] mine = [.. hs.Layers.Where(l => l >= hop.Start && l < hop.End)];
        return mine.Length > 0 ? mine : null;
    }

    /// <summary>Keeps a chunk's hidden states (a middle stage) and captured layer outputs; takes ownership.</summary>
    public void AddChunk(Tensor? hidden, IEnumerable<CapturedLayer> captured)
    {
        if (hidden is not null) _outputs.Add(hidden.DetachFromDisposeScope());
        foreach (var c in captured)
        {
            if (!_captured.TryGetValue(c.Layer, out var chunks)) _captured[c.Layer] = chunks = [];
            chunks.Add(c.Hidden.DetachFromDisposeScope());
        }
    }

    /// <summary>
    /// Scores a chunk's positions (rows of <paramref name="logits"/> [count, V], input rows offset … offset + count - 1)
    /// against the scored token ids; the step's last position has no scored token (it is sampled).
    /// </summary>
    public void ScoreChunk(Tensor logits, int offset)
    {
        var scored = Request.Logprobs!.ScoredTokenIds;
        int count = (int)Math.Min(logits.shape[0], scored.Length - offset);
        if (count <= 0) return;
        using var rows = logits.narrow(0, 0, count);
        _inputLogprobs.AddRange(LogprobScorer.Score(rows, new ArraySegment<int>(scored, offset, count), Request.Logprobs.Top));
    }

    /// <summary>
    /// Positions at the end of the input whose logits the last stage needs to verify a draft (<see cref="ForwardRequest.Draft"/>):
    /// the last known token's and each drafted token's; 0 for an ordinary step.
    /// </summary>
    public int VerifiedPositions => Request.Draft.Length == 0 ? 0 : Request.Draft.Length + 1;

    /// <summary>True when a chunk of <paramref name="count"/> positions from <paramref name="offset"/> holds verified positions.</summary>
    public bool Verifies(int offset, int count) => VerifiedPositions > 0 && offset + count > Input.shape[0] - VerifiedPositions;

    /// <summary>Keeps the rows of a chunk's all-position logits [count, V] that fall on verified positions; takes no ownership.</summary>
    public void KeepVerified(Tensor logits, int offset)
    {
        long from = Math.Max(0, Input.shape[0] - VerifiedPositions - offset);
        if (from >= logits.shape[0]) return;
        using var rows = logits.narrow(0, from, logits.shape[0] - from);
        _verified.Add(rows.clone().DetachFromDisposeScope());
    }

    /// <summary>The verified positions' logits [<see cref="VerifiedPositions"/>, V], once every chunk ran (a tensor of the caller's dispose scope when cat).</summary>
    public Tensor VerifiedLogits() => _verified.Count == 1 ? _verified[0] : cat(_verified, 0);

    /// <summary>The scored input tokens' log-probabilities so far, in input order.</summary>
    public TokenLogprobs[] InputLogprobs => [.. _inputLogprobs];

    /// <summary>The step's hidden states [t, H] in the compute dtype (a tensor of the caller's dispose scope when cat).</summary>
    public Tensor HiddenTensor() => _outputs.Count == 1 ? _outputs[0] : cat(_outputs, 0);

    /// <summary>The captured layer outputs (f32 [t, H], or [1, H] when only the last position was asked for), in layer order.</summary>
    public LayerHiddenStates[] CapturedHiddenStates()
    {
        using var scope = NewDisposeScope();
        bool all = Request.HiddenStates?.AllPositions ?? true;
        return [.. _captured.Select(kv =>
        {
            var rows = kv.Value.Count == 1 ? kv.Value[0] : cat(kv.Value, 0);
            if (!all) rows = rows.narrow(0, rows.shape[0] - 1, 1);
            return new LayerHiddenStates { Layer = kv.Key, Data = WireTensorConversion.FromTensor(rows, WireDType.F32) };
        })];
    }

    /// <summary>Frees the input and everything kept.</summary>
    public void Dispose()
    {
        Input.Dispose();
        foreach (var o in _outputs) o.Dispose();
        _outputs.Clear();
        foreach (var t in _captured.Values.SelectMany(c => c)) t.Dispose();
        _captured.Clear();
        foreach (var v in _verified) v.Dispose();
        _verified.Clear();
    }
}
