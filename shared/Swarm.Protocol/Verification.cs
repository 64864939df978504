using MessagePack;

namespace Swarm.Protocol;

/// <summary>
/// What one stage computed for one step, compactly: a fixed seeded random projection of every position of the hidden
/// states it received and of those it produced (each position to <see cref="Width"/> floats, computed in f32), so the
/// coordinator can compare two replicas that ran the same step without any hidden state crossing to it. A last stage's
/// <see cref="Output"/> is the projection of the logits of the step's last position, with its sampled token's runner-up
/// and margin in <see cref="RunnerUp"/> and <see cref="Margin"/>.
/// </summary>
/// <remarks>Keys 0–4, append-only.</remarks>
[MessagePackObject]
public sealed record StageFingerprint
{
    /// <summary>Floats per position.</summary>
    public const int Width = 16;

    /// <summary>The node that computed the step.</summary>
    [Key(0)] public int NodeId { get; init; }

    /// <summary>Projection of the input hidden states, positions × <see cref="Width"/>; empty on a first stage (its input is token ids).</summary>
    [Key(1)] public float[] Input { get; init; } = [];

    /// <summary>Projection of the output hidden states (positions × <see cref="Width"/>), or of the last position's logits (<see cref="Width"/>) on a last stage.</summary>
    [Key(2)] public float[] Output { get; init; } = [];

    /// <summary>Last stage only: the most likely token other than the top one (−1 elsewhere).</summary>
    [Key(3)] public int RunnerUp { get; init; } = -1;

    /// <summary>Last stage only: logit of the top token minus that of <see cref="RunnerUp"/> (0 elsewhere).</summary>
    [Key(4)] public float Margin { get; init; }
}

/// <summary>
/// A spot check's copy order, carried by a <see cref="ForwardRequest"/> as far as the hop before the checked node: that
/// hop sends its output to its next hop as usual and, identically, to <see cref="Shadow"/> as session
/// <see cref="SessionId"/> (a one-hop route), and strips this order from what it forwards — the checked node never
/// sees that its input was copied. The coordinator makes the copy itself when the checked node is the first hop.
/// </summary>
/// <remarks>Keys 0–2, append-only.</remarks>
[MessagePackObject]
public sealed record ShadowCopy
{
    /// <summary>Length of the route (<see cref="ForwardRequest.Route"/>) the checked node receives: the hop whose forwarded route has this length makes the copy.</summary>
    [Key(0)] public int RouteLength { get; init; }

    /// <summary>The second replica of the checked node's layers, with the checked hop's layer range.</summary>
    [Key(1)] public Hop Shadow { get; init; } = new();

    /// <summary>The shadow session the copy runs in on <see cref="Shadow"/>.</summary>
    [Key(2)] public long SessionId { get; init; }
}
