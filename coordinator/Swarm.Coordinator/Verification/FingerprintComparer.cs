using Swarm.Protocol;

namespace Swarm.Coordinator.Verification;

/// <summary>One replica's answer to a step, as a spot check compares it: its fingerprint and, on a last stage, its token.</summary>
/// <param name="NodeId">The replica.</param>
/// <param name="Fingerprint">Its fingerprint of the step.</param>
/// <param name="Token">The sampled token on a last stage; −1 elsewhere.</param>
internal sealed record ReplicaAnswer(int NodeId, StageFingerprint Fingerprint, int Token);

/// <summary>
/// Decides whether two replicas' answers to the same step agree: every position's output fingerprint within the
/// relative tolerance, and on a last stage the same token (or a near tie, see <see cref="VerificationOptions.TieMargin"/>).
/// Pure; the <see cref="VerificationOptions"/> explain the thresholds.
/// </summary>
internal static class FingerprintComparer
{
    /// <summary>Largest relative distance between the fingerprints of any position in <paramref name="a"/> and <paramref name="b"/>; +∞ when their lengths differ.</summary>
    public static double MaxDistance(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        if (a.Length != b.Length) return double.PositiveInfinity;
        int w = StageFingerprint.Width;
        double worst = 0;
        for (int p = 0; p + w <= a.Length; p += w)
        {
            double diff = 0, na = 0, nb = 0;
            for (int k = p; k < p + w; k++)
            {
                double x = a[k], y = b[k];
                diff += (x - y) * (x - y);
                na += x * x;
                nb += y * y;
            }
            double d = Math.Sqrt(diff) / Math.Max(Math.Sqrt(Math.Max(na, nb)), 1e-6);
            if (!(d <= worst)) worst = double.IsNaN(d) ? double.PositiveInfinity : d;
        }
        return worst;
    }

    /// <summary>True when the two answers' outputs (and tokens) agree.</summary>
    public static bool Agree(ReplicaAnswer a, ReplicaAnswer b, VerificationOptions options) =>
        MaxDistance(a.Fingerprint.Output, b.Fingerprint.Output) <= options.Tolerance && SameToken(a, b, options);

    /// <summary>True when the two replicas' inputs agree (so the hop before them sent both the same thing).</summary>
    public static bool SameInput(ReplicaAnswer a, ReplicaAnswer b, VerificationOptions options) =>
        MaxDistance(a.Fingerprint.Input, b.Fingerprint.Input) <= options.Tolerance;

    private static bool SameToken(ReplicaAnswer a, ReplicaAnswer b, VerificationOptions options) =>
        a.Token == b.Token
        || (a.Fingerprint.RunnerUp == b.Token && b.Fingerprint.RunnerUp == a.Token
            && a.Fingerprint.Margin < options.TieMargin * Rms(a.Fingerprint.Output) && b.Fingerprint.Margin < options.TieMargin * Rms(b.Fingerprint.Output));

    /// <summary>
    /// The RMS of the vector a fingerprint projects: the projection's entries are N(0, 1/dim), so each of the Width
    /// values has variance ‖x‖²/dim = RMS(x)², and the fingerprint's own RMS estimates the vector's.
    /// </summary>
    private static double Rms(float[] fingerprint) =>
        fingerprint.Length == 0 ? 0 : Math.Sqrt(fingerprint.Sum(v => (double)v * v) / fingerprint.Length);

    /// <summary>The last <paramref name="positions"/> positions of <paramref name="answer"/>'s output (an arbiter that replayed the whole prefix).</summary>
    public static ReplicaAnswer LastPositions(ReplicaAnswer answer, int positions)
    {
        var output = answer.Fingerprint.Output;
        int keep = Math.Min(output.Length, positions * StageFingerprint.Width);
        return answer with { Fingerprint = answer.Fingerprint with { Output = output[^keep..] } };
    }
}
