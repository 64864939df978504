using Swarm.Transport.Security;

namespace Swarm.Tests.Security;

/// <summary>Runs two <see cref="SecureHandshake"/>s against each other in memory, frame by frame.</summary>
internal static class HandshakeDriver
{
    /// <summary>The outcome on both sides; the caller disposes the handshakes (and any channels).</summary>
    public sealed record Outcome(SecureHandshake Initiator, SecureHandshake Responder, int FramesExchanged) : IDisposable
    {
        public void Dispose()
        {
            Initiator.Channel?.Dispose();
            Responder.Channel?.Dispose();
            Initiator.Dispose();
            Responder.Dispose();
        }
    }

    /// <param name="alter">Changes a frame in flight (index counts frames in both directions from 0), or returns it unchanged.</param>
    public static Outcome Run(NodeIdentity initiatorIdentity, SecureChannelOptions initiatorOptions,
                              NodeIdentity responderIdentity, SecureChannelOptions responderOptions,
                              Func<int, byte[], byte[]>? alter = null)
    {
        var initiator = SecureHandshake.CreateInitiator(initiatorIdentity, initiatorOptions);
        var responder = SecureHandshake.CreateResponder(responderIdentity, responderOptions);
        byte[]? frame = initiator.Start();
        var to = responder;
        int index = 0;
        while (frame != null && to.Status == HandshakeStatus.InProgress)
        {
            if (alter != null) frame = alter(index, frame);
            index++;
            var step = to.Receive(frame);
            frame = step.Reply;
            to = to == responder ? initiator : responder;
        }
        return new Outcome(initiator, responder, index);
    }

    /// <summary>An established pair of channels between two fresh identities (PSK mode unless <paramref name="psk"/> is false).</summary>
    public static (SecureChannel Initiator, SecureChannel Responder) Establish(RecordCipherOptions? records = null, bool psk = true)
    {
        using var a = NodeIdentity.CreateEphemeral();
        using var b = NodeIdentity.CreateEphemeral();
        var key = psk ? Enumerable.Repeat((byte)7, 32).ToArray() : null;
        var options = new SecureChannelOptions { Psk = key, Records = records ?? new RecordCipherOptions() };
        var outcome = Run(a, options, b, new SecureChannelOptions { Psk = key, Records = options.Records, Counters = new() });
        if (outcome.Initiator.Status != HandshakeStatus.Established || outcome.Responder.Status != HandshakeStatus.Established)
            throw new InvalidOperationException($"handshake failed: {outcome.Initiator.Error} / {outcome.Responder.Error}");
        return (outcome.Initiator.Channel!, outcome.Responder.Channel!);
    }
}

/// <summary>A clock for rekey timing that moves only when the test says so (monotonic timestamps included).</summary>
internal sealed class SteppedClock : TimeProvider
{
    private long _ticks;

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public override long GetTimestamp() => _ticks;

    public override DateTimeOffset GetUtcNow() => new DateTimeOffset(2025, 1, 1, 0, 0, 0, TimeSpan.Zero).AddTicks(_ticks);

    public void Advance(TimeSpan by) => _ticks += by.Ticks;
}
