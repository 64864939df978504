using Swarm.Model;

namespace Swarm.Tests.Engine;

/// <summary>
/// A deliberately plain float64 GPT-NeoX, written from the HF architecture description and sharing no code
/// with the engine: loops over positions and heads, explicit causal softmax, explicit rotate_half on the first
/// rotary_ndims dims, exact erf GELU, LayerNorm by formula. Slow and obviously correct; checked against the
/// HF fixture in <see cref="ReferenceModelTests"/> before it is trusted on anything else.
/// </summary>
internal sealed class ReferenceNeoX
{
    private readonly ModelConfig _c;
    private readonly Func<string, double[]> _w;

    /// <param name="weight">Tensor name (HF naming) → values, row-major, already rounded to the stored dtype.</param>
    public ReferenceNeoX(ModelConfig config, Func<string, double[]> weight)
    {
        _c = config;
        _w = weight;
    }

    /// <summary>Logits [T][V] for every position, and optionally each layer's output [layer][T][H].</summary>
    public double[][] Forward(IReadOnlyList<long> ids, List<double[][]>? layerOutputs = null)
    {
        int h = _c.HiddenSize, t = ids.Count;
        var embed = _w("gpt_neox.embed_in.weight");
        var x = new double[t][];
        for (int i = 0; i < t; i++) x[i] = embed.AsSpan((int)ids[i] * h, h).ToArray();
        for (int l = 0; l < _c.NumLayers; l++)
        {
            x = Layer(l, x);
            layerOutputs?.Add(x.Select(r => (double[])r.Clone()).ToArray());
        }
        var embedOut = _w("embed_out.weight");
        var logits = new double[t][];
        for (int i = 0; i < t; i++)
        {
            var n = LayerNorm(x[i], _w("gpt_neox.final_layer_norm.weight"), _w("gpt_neox.final_layer_norm.bias"));
            logits[i] = Linear(n, embedOut, null, _c.VocabSize);
        }
        return logits;
    }

    /// <summary>Greedy decoding by recomputing the whole sequence each step (no cache). Also returns each step's top-1 − top-2 gap.</summary>
    public (long[] Tokens, double[] Gaps) Greedy(IReadOnlyList<long> prompt, int steps)
    {
        var seq = prompt.ToList();
        var tokens = new long[steps];
        var gaps = new double[steps];
        for (int s = 0; s < steps; s++)
        {
            var last = Forward(seq)[^1];
            int best = 0;
            for (int v = 1; v < last.Length; v++) if (last[v] > last[best]) best = v;
            double second = double.NegativeInfinity;
            for (int v = 0; v < last.Length; v++) if (v != best) second = Math.Max(second, last[v]);
            tokens[s] = best;
            gaps[s] = last[best] - second;
            seq.Add(best);
        }
        return (tokens, gaps);
    }

    private double[][] Layer(int l, double[][] x)
    {
        string p = $"gpt_neox.layers.{l}.";
        int t = x.Length, h = _c.HiddenSize, nh = _c.NumHeads, hd = h / nh, inter = _c.IntermediateSize;
        int rd = (int)(hd * _c.RotaryPct); // HF: rotary_ndims = int(head_size * rotary_pct)

        // q, k, v per position and head; the fused projection packs [q k v] per head.
        var q = new double[t, nh][];
        var k = new double[t, nh][];
        var v = new double[t, nh][];
        for (int i = 0; i < t; i++)
        {
            var ln = LayerNorm(x[i], _w(p + "input_layernorm.weight"), _w(p + "input_layernorm.bias"));
            var qkv = Linear(ln, _w(p + "attention.query_key_value.weight"), _w(p + "attention.query_key_value.bias"), 3 * h);
            for (int n = 0; n < nh; n++)
            {
                q[i, n] = Rotate(qkv.AsSpan(n * 3 * hd, hd).ToArray(), i, rd);
                k[i, n] = Rotate(qkv.AsSpan(n * 3 * hd + hd, hd).ToArray(), i, rd);
                v[i, n] = qkv.AsSpan(n * 3 * hd + 2 * hd, hd).ToArray();
            }
        }

        var output = new double[t][];
        for (int i = 0; i < t; i++)
        {
            var attn = new double[h];
            for (int n = 0; n < nh; n++)
            {
                // causal: position i attends to 0..i
                var scores = new double[i + 1];
                for (int j = 0; j <= i; j++)
                {
                    double s = 0;
                    for (int d = 0; d < hd; d++) s += q[i, n][d] * k[j, n][d];
                    scores[j] = s / Math.Sqrt(hd);
                }
                double max = scores.Max(), sum = 0;
                for (int j = 0; j <= i; j++) { scores[j] = Math.Exp(scores[j] - max); sum += scores[j]; }
                for (int j = 0; j <= i; j++)
                    for (int d = 0; d < hd; d++)
                        attn[n * hd + d] += scores[j] / sum * v[j, n][d];
            }
            var attnOut = Linear(attn, _w(p + "attention.dense.weight"), _w(p + "attention.dense.bias"), h);

            double[] Mlp(double[] input)
            {
                var ln2 = LayerNorm(input, _w(p + "post_attention_layernorm.weight"), _w(p + "post_attention_layernorm.bias"));
                var up = Linear(ln2, _w(p + "mlp.dense_h_to_4h.weight"), _w(p + "mlp.dense_h_to_4h.bias"), inter);
                for (int d = 0; d < up.Length; d++) up[d] = Gelu(up[d]);
                return Linear(up, _w(p + "mlp.dense_4h_to_h.weight"), _w(p + "mlp.dense_4h_to_h.bias"), h);
            }

            var y = new double[h];
            if (_c.UseParallelResidual)
            {
                // x + attn(ln1(x)) + mlp(ln2(x))
                var mlp = Mlp(x[i]);
                for (int d = 0; d < h; d++) y[d] = x[i][d] + attnOut[d] + mlp[d];
            }
            else
            {
                // x = x + attn(ln1(x)); x = x + mlp(ln2(x))
                var mid = new double[h];
                for (int d = 0; d < h; d++) mid[d] = x[i][d] + attnOut[d];
                var mlp = Mlp(mid);
                for (int d = 0; d < h; d++) y[d] = mid[d] + mlp[d];
            }
            output[i] = y;
        }
        return output;
    }

    /// <summary>NeoX rotary on the first rd dims: x·cos + rotate_half(x)·sin, rotate_half(a‖b) = (−b)‖a.</summary>
    private double[] Rotate(double[] x, int position, int rd)
    {
        if (rd == 0) return x;
        int half = rd / 2;
        var y = (double[])x.Clone();
        for (int d = 0; d < rd; d++)
        {
            int j = d % half; // emb = cat(freqs, freqs)
            double invFreq = 1.0 / Math.Pow(_c.RotaryBase, 2.0 * j / rd);
            double angle = position * invFreq;
            double rotated = d < half ? -x[d + half] : x[d - half];
            y[d] = x[d] * Math.Cos(angle) + rotated * Math.Sin(angle);
        }
        return y;
    }

    private double[] LayerNorm(double[] x, double[] w, double[] b)
    {
        double mean = x.Average();
        double var = x.Select(a => (a - mean) * (a - mean)).Average(); // biased, as torch
        var y = new double[x.Length];
        for (int d = 0; d < x.Length; d++) y[d] = (x[d] - mean) / Math.Sqrt(var + _c.LayerNormEps) * w[d] + b[d];
        return y;
    }

    /// <summary>y = W·x + b with W stored [out, in] row-major (HF nn.Linear layout).</summary>
    private static double[] Linear(double[] x, double[] w, double[]? b, int outDim)
    {
        int inDim = x.Length;
        var y = new double[outDim];
        for (int o = 0; o < outDim; o++)
        {
            double s = b?[o] ?? 0;
            for (int i = 0; i < inDim; i++) s += w[o * inDim + i] * x[i];
            y[o] = s;
        }
        return y;
    }

    /// <summary>Exact GELU: x·Φ(x) = ½x(1 + erf(x/√2)).</summary>
    public static double Gelu(double x) => 0.5 * x * (1 + Erf(x / Math.Sqrt(2)));

    /// <summary>erf to ~1e-14: Maclaurin series for |x| &lt; 2.5, Lentz continued fraction for erfc beyond.</summary>
    public static double Erf(double x)
    {
        if (x < 0) return -Erf(-x);
        if (x < 2.5)
        {
            // erf(x) = 2/√π Σ (−1)ⁿ x^(2n+1) / (n! (2n+1))
            double term = x, sum = x;
            for (int n = 1; n < 100; n++)
            {
                term *= -x * x / n;
                double add = term / (2 * n + 1);
                sum += add;
                if (Math.Abs(add) < 1e-17 * Math.Abs(sum)) break;
            }
            return 2 / Math.Sqrt(Math.PI) * sum;
        }
        // erfc(x) = e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))), evaluated from the tail.
        double f = x;
        for (int k = 200; k >= 1; k--) f = x + k / 2.0 / f;
        return 1 - Math.Exp(-x * x) / Math.Sqrt(Math.PI) / f;
    }
}
