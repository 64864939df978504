using Swarm.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Swarm.Model;

/// <summary>
/// A pipeline stage: GPT-NeoX layers [Start, End). The first stage also embeds token ids; the last
/// also applies the final LayerNorm and the unembedding. Loads only its own tensors from the checkpoint.
/// </summary>
public sealed class StageModel : IDisposable
{
    private readonly NeoXLayer[] _layers;
    private readonly Rotary _rope;
    private readonly Tensor? _embedIn, _finalW, _finalB;
    private readonly Dense? _embedOut;
    private readonly long[] _normShape;

    public ModelConfig Config { get; }
    public int Start { get; }
    public int End { get; }
    public ScalarType ComputeDtype { get; }
    public bool IsFirst => Start == 0;
    public bool IsLast => End == Config.NumLayers;
    public int LayerCount => End - Start;
    /// <summary>Longest sequence a session may reach (max_position_embeddings).</summary>
    public int MaxTokens => Config.MaxPositionEmbeddings;

    private StageModel(ModelConfig c, int start, int end, ScalarType dtype, NeoXLayer[] layers, Rotary rope,
        Tensor? embedIn, Tensor? finalW, Tensor? finalB, Dense? embedOut)
    {
        Config = c; Start = start; End = end; ComputeDtype = dtype; _layers = layers; _rope = rope;
        _embedIn = embedIn; _finalW = finalW; _finalB = finalB; _embedOut = embedOut;
        _normShape = [c.HiddenSize];
    }

    /// <summary>Loads layers [start, end) in <paramref name="dtype"/> (f32 default; bf16 where the CPU supports it).</summary>
    /// <param name="parallelism">Threads that split a batch-1 GEMV (default: all cores).</param>
    public static StageModel Load(Checkpoint ckpt, int start, int end, ScalarType dtype = ScalarType.Float32,
        IProgress<(long Done, long Total)>? progress = null, int parallelism = 0)
    {
        var c = ckpt.Config;
        if (start < 0 || end > c.NumLayers || start > end || (start == end && start != 0 && end != c.NumLayers))
            throw new ArgumentException($"invalid layer range [{start}, {end}) for a model of {c.NumLayers} layers");
        if (dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
            throw new ArgumentException($"unsupported compute dtype {dtype}");
        if (parallelism <= 0) parallelism = ComputePool.Shared.Workers + 1;
        var owned = new List<IDisposable>();
        try
        {
            long h = c.HiddenSize, v = c.VocabSize;
            Tensor? embedIn = null, finalW = null, finalB = null;
            Dense? embedOut = null;
            // Progress in bytes read from the checkpoint (what a terminal progress bar shows).
            long total = StageTensorNames(c, start, end).Sum(n => ckpt.Has(n) ? ckpt.Entry(n).End - ckpt.Entry(n).Begin : 0);
            long baseline = ckpt.BytesRead;
            long Done() => ckpt.BytesRead - baseline;
            if (start == 0)
            {
                embedIn = ckpt.Read("gpt_neox.embed_in.weight", [v, h], dtype).DetachFromDisposeScope();
                owned.Add(embedIn);
                progress?.Report((Done(), total));
            }
            var layers = new NeoXLayer[end - start];
            for (int i = start; i < end; i++)
            {
                layers[i - start] = new NeoXLayer(ckpt, i, dtype, parallelism);
                owned.Add(layers[i - start]);
                progress?.Report((Done(), total));
            }
            if (end == c.NumLayers)
            {
                finalW = ckpt.Read("gpt_neox.final_layer_norm.weight", [h], dtype).DetachFromDisposeScope(); owned.Add(finalW);
                finalB = ckpt.Read("gpt_neox.final_layer_norm.bias", [h], dtype).DetachFromDisposeScope(); owned.Add(finalB);
                embedOut = new Dense(ckpt.Read("embed_out.weight", [v, h], dtype), null, parallelism); owned.Add(embedOut);
                progress?.Report((Done(), total));
            }
            var rope = new Rotary(c, c.MaxPositionEmbeddings, dtype);
            return new StageModel(c, start, end, dtype, layers, rope, embedIn, finalW, finalB, embedOut);
        }
        catch
        {
            foreach (var d in owned) d.Dispose();
            throw;
        }
    }

    /// <summary>Names of the checkpoint tensors layers [start, end) of a stage read.</summary>
    public static IEnumerable<string> StageTensorNames(ModelConfig c, int start, int end)
    {
        if (start == 0) yield return "gpt_neox.embed_in.weight";
        string[] parts = ["input_layernorm.weight", "input_layernorm.bias", "post_attention_layernorm.weight", "post_attention_layernorm.bias",
            "attention.query_key_value.weight", "attention.query_key_value.bias", "attention.dense.weight", "attention.dense.bias",
            "mlp.dense_h_to_4h.weight", "mlp.dense_h_to_4h.bias", "mlp.dense_4h_to_h.weight", "mlp.dense_4h_to_h.bias"];
        for (int i = start; i < end; i++)
            foreach (var p in parts) yield return $"gpt_neox.layers.{i}.{p}";
        if (end == c.NumLayers)
        {
            yield return "gpt_neox.final_layer_norm.weight";
            yield return "gpt_neox.final_layer_norm.bias";
            yield return "embed_out.weight";
        }
    }

    /// <summary>Bytes of weights this stage holds.</summary>
    public long WeightBytes => _layers.Sum(l => l.WeightBytes) + (_embedOut?.Bytes ?? 0)
        + new[] { _embedIn, _finalW, _finalB }.Where(t => t is not null).Sum(t => t!.NumberOfElements * t.ElementSize);

    /// <summary>Bytes of weights read to produce one token at batch 1 (the embedding reads one row).</summary>
    public long WeightBytesReadPerToken => WeightBytes - (_embedIn is null ? 0 : _embedIn.NumberOfElements * _embedIn.ElementSize);

    /// <summary>Creates an empty KV cache for this stage's layers.</summary>
    public KvCache NewCache(int batch = 1, int initialCapacity = 64) =>
        new(LayerCount, batch, Config.NumHeads, Config.HeadDim, ComputeDtype, MaxTokens, initialCapacity);

    /// <summary>KV bytes one token costs on this stage.</summary>
    public long KvBytesPerToken => KvCache.BytesPerTokenPerLayer(Config, ComputeDtype) * LayerCount;

    /// <summary>Token ids [B, T] (int64) → embeddings [B, T, H]. First stage only.</summary>
    public Tensor Embed(Tensor ids)
    {
        if (_embedIn is null) throw new InvalidOperationException("only the first stage embeds tokens");
        using var scope = NewDisposeScope();
        long b = ids.shape[0], t = ids.shape[1];
        using var flat = ids.reshape(-1);
        if (flat.min().item<long>() < 0 || flat.max().item<long>() >= Config.VocabSize)
            throw new ArgumentOutOfRangeException(nameof(ids), $"token ids must be in [0, {Config.VocabSize})");
        return _embedIn.index_select(0, flat).view(b, t, Config.HiddenSize).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Runs this stage on one step of a session. Input: token ids [B, T] for the first stage, hidden
    /// states [B, T, H] otherwise (any float dtype). Output: hidden states [B, T, H] (compute dtype), or for the
    /// last stage f32 logits — of the last position [B, V] unless <paramref name="allPositions"/> ([B, T, V]).
    /// The cache advances by T. Inputs are never disposed; the caller owns the result.
    /// </summary>
    public Tensor Forward(Tensor input, KvCache cache, bool allPositions = false) =>
        Forward(input, cache, Start, End, allPositions);

    /// <summary>
    /// Runs only layers [<paramref name="from"/>, <paramref name="to"/>) of this stage (a route may use part of
    /// what a node holds): embeds when <paramref name="from"/> is 0, applies the head when <paramref name="to"/>
    /// is the model's last layer. A session must use the same sub-range on every step of one cache.
    /// </summary>
    public Tensor Forward(Tensor input, KvCache cache, int from, int to, bool allPositions = false)
    {
        if (from < Start || to > End || from > to)
            throw new ArgumentOutOfRangeException(nameof(from), $"layers [{from}, {to}) are not inside this stage's [{Start}, {End})");
        using var scope = NewDisposeScope();
        using var _ = inference_mode();
        var x = from == 0 ? Embed(input) : input.to_type(ComputeDtype);
        int t = (int)x.shape[1];
        if (cache.Length + t > MaxTokens)
            throw new InvalidOperationException($"context full: {cache.Length + t} tokens exceed the limit of {MaxTokens}");
        Tensor? mask = null;
        if (t > 1)
        {
            // causal over cached + new positions: query i (absolute cache.Length+i) sees keys ≤ its position
            int total = cache.Length + t;
            mask = ones([t, total], ScalarType.Bool).tril(cache.Length);
        }
        for (int i = from - Start; i < to - Start; i++)
            x = _layers[i].Forward(x, _rope, i, cache, mask);
        cache.Advance(t);
        if (to != Config.NumLayers) return x.MoveToOuterDisposeScope();
        return Head(x, allPositions).MoveToOuterDisposeScope();
    }

    /// <summary>Final LayerNorm + unembedding → f32 logits.</summary>
    public Tensor Head(Tensor hidden, bool allPositions)
    {
        if (_embedOut is null) throw new InvalidOperationException("only the last stage has the unembedding");
        using var scope = NewDisposeScope();
        var x = hidden.to_type(ComputeDtype);
        if (!allPositions) x = x.narrow(1, x.shape[1] - 1, 1).squeeze(1);
        x = F.layer_norm(x, _normShape, _finalW!, _finalB!, Config.LayerNormEps);
        var logits = _embedOut.Forward(x);
        return logits.to_type(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        foreach (var l in _layers) l.Dispose();
        _rope.Dispose();
        _embedIn?.Dispose(); _finalW?.Dispose(); _finalB?.Dispose(); _embedOut?.Dispose();
    }
}
