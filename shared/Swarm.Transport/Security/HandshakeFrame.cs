using System.Text;

namespace Swarm.Transport.Security;

/// <summary>
/// The frames a <see cref="SecureHandshake"/> exchanges (sent over any reliable, ordered channel):
/// <list type="bullet">
/// <item><c>0x01 | mode | Noise message 1</c> — hello; mode 0 = Noise_XX, 1 = Noise_XXpsk3 (a hint that lets a
/// mismatch be reported plainly; the protocol name is hashed into the handshake anyway).</item>
/// <item><c>0x02 | Noise message 2 or 3</c>.</item>
/// <item><c>0x03 | UTF-8 reason</c> — refusal. Unauthenticated: used only to explain a failure that is final anyway.</item>
/// <item>a record (<see cref="RecordFormat"/>, kind 0x10) with an empty payload — the responder's confirmation,
/// proving to the initiator that both hold the same keys (and so the same PSK).</item>
/// </list>
/// </summary>
internal static class HandshakeFrame
{
    public const byte Hello = 0x01;
    public const byte Message = 0x02;
    public const byte Reject = 0x03;
    public const byte ModeOpen = 0;
    public const byte ModePsk = 1;
    public const int MaxReasonChars = 200;

    public static byte[] CreateHello(bool psk, ReadOnlySpan<byte> noiseMessage)
    {
        var frame = new byte[noiseMessage.Length + 2];
        frame[0] = Hello;
        frame[1] = psk ? ModePsk : ModeOpen;
        noiseMessage.CopyTo(frame.AsSpan(2));
        return frame;
    }

    public static byte[] CreateMessage(ReadOnlySpan<byte> noiseMessage)
    {
        var frame = new byte[noiseMessage.Length + 1];
        frame[0] = Message;
        noiseMessage.CopyTo(frame.AsSpan(1));
        return frame;
    }

    public static byte[] CreateReject(string reason)
    {
        var text = Encoding.UTF8.GetBytes(Sanitize(reason));
        var frame = new byte[text.Length + 1];
        frame[0] = Reject;
        text.CopyTo(frame.AsSpan(1));
        return frame;
    }

    /// <summary>The reason in a refusal, made safe for a log line (length-limited, no control characters).</summary>
    public static string ReadReason(ReadOnlySpan<byte> frame) =>
        frame.Length <= 1 ? "(no reason given)" : Sanitize(Encoding.UTF8.GetString(frame[1..Math.Min(frame.Length, 4 * MaxReasonChars + 1)]));

    public static string Describe(ReadOnlySpan<byte> frame) => frame.IsEmpty ? "an empty frame" : $"a frame of kind 0x{frame[0]:x2}";

    /// <summary>A peer-supplied reason made safe for a log line: at most <see cref="MaxReasonChars"/> characters, no control characters.</summary>
    public static string Sanitize(string text)
    {
        var chars = text.Take(MaxReasonChars).Select(c => char.IsControl(c) ? '?' : c).ToArray();
        return new string(chars);
    }
}
