using Swarm.Model;
using static TorchSharp.torch;

namespace Swarm.Tests.Model;

/// <summary>
/// One sequence on one stage through the engine's only forward, <see cref="StageModel.ForwardBatch"/>, with a batch of
/// one over a KV pool of its own — what the single-session tests drive. Blocks are reserved as positions arrive. With
/// <c>fragmented</c> every block of the sequence is preceded by one taken by a filler sequence, so from its second block
/// on its positions are not consecutive and attention gathers them (the path of sessions interleaved on a node); without,
/// they are one contiguous run that attention reads as a view.
/// </summary>
internal sealed class StageSession : IDisposable
{
    private readonly StageModel _stage;
    private readonly KvSequence _sequence, _filler;
    private readonly bool _fragmented;
    private readonly int _from, _to;

    /// <param name="from">First layer to run (default: the stage's first); <paramref name="to"/> likewise its end.</param>
    public StageSession(StageModel stage, bool fragmented = false, int blockSize = 4, int? from = null, int? to = null)
    {
        _stage = stage;
        _fragmented = fragmented;
        _from = from ?? stage.Start;
        _to = to ?? stage.End;
        Pool = stage.NewBlockPool(2 * ((stage.MaxTokens + blockSize - 1) / blockSize), blockSize);
        _sequence = Pool.NewSequence();
        _filler = Pool.NewSequence();
    }

    public KvBlockPool Pool { get; }

    /// <summary>Positions cached so far.</summary>
    public int Length => _sequence.Length;

    /// <summary>True when the sequence's blocks are not consecutive (attention gathers its positions).</summary>
    public bool IsGathered => _sequence.ContiguousStart is null;

    /// <summary>
    /// One step: token ids (any shape) on a session that starts at layer 0, hidden states [.., H] otherwise. Returns hidden
    /// states [t, H], or on the last layer f32 logits [V] of the last position ([t, V] with <paramref name="allPositions"/>).
    /// </summary>
    public Tensor Forward(Tensor input, bool allPositions = false)
    {
        long t = _from == 0 ? input.NumberOfElements : input.NumberOfElements / _stage.Config.HiddenSize;
        int needed = Length + (int)t;
        while (Pool.Missing(_sequence, needed) > 0)
        {
            if (_fragmented && !Pool.TryReserve(_filler, _filler.ReservedTokens + Pool.BlockSize))
                throw new InvalidOperationException("the session's pool is full");
            if (!Pool.TryReserve(_sequence, _sequence.ReservedTokens + Pool.BlockSize))
                throw new InvalidOperationException("the session's pool is full");
        }
        return _stage.ForwardBatch([new BatchItem(input, _sequence, AllPositions: allPositions)], Pool, _from, _to)[0]!;
    }

    public void Dispose() => Pool.Dispose();
}
