using Swarm.Transport.Security;
using Xunit;

namespace Swarm.Tests.Security;

/// <summary>The handshake driver's decisions, in memory; <see cref="SecureChannelUdpTests"/> runs it over sockets.</summary>
public sealed class SecureHandshakeTests : IDisposable
{
    private readonly NodeIdentity _node = NodeIdentity.CreateEphemeral();
    private readonly NodeIdentity _coordinator = NodeIdentity.CreateEphemeral();
    private static byte[] Psk(byte fill) => Enumerable.Repeat(fill, 32).ToArray();

    public void Dispose()
    {
        _node.Dispose();
        _coordinator.Dispose();
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Run_SameSettings_EstablishesWithProvenKeysOnBothSides(bool psk)
    {
        var key = psk ? Psk(1) : null;
        using var o = HandshakeDriver.Run(_node, new() { Psk = key, ExpectedRemoteKey = _coordinator.PublicKey.ToArray() },
                                          _coordinator, new() { Psk = key });
        Assert.Equal(HandshakeStatus.Established, o.Initiator.Status);
        Assert.Equal(HandshakeStatus.Established, o.Responder.Status);
        Assert.Equal(4, o.FramesExchanged);
        Assert.Equal(_coordinator.PublicKey.ToArray(), o.Initiator.Channel!.RemoteStaticKey.ToArray());
        Assert.Equal(_node.Fingerprint, o.Responder.Channel!.RemoteFingerprint);
        Assert.Equal(psk ? "Noise_XXpsk3_25519_ChaChaPoly_SHA256" : "Noise_XX_25519_ChaChaPoly_SHA256", o.Initiator.Channel.ProtocolName);
        Assert.True(o.Initiator.Channel.IsInitiator);
        Assert.False(o.Responder.Channel.IsInitiator);
    }

    [Fact]
    public void Run_WrongPsk_FailsOnBothSidesNamingTheSecret()
    {
        using var o = HandshakeDriver.Run(_node, new() { Psk = Psk(1) }, _coordinator, new() { Psk = Psk(2) });
        Assert.Equal(HandshakeStatus.Failed, o.Responder.Status);
        Assert.StartsWith("the swarm secrets differ", o.Responder.Error);
        Assert.Equal(HandshakeStatus.Failed, o.Initiator.Status);
        Assert.Equal("the peer refused the handshake: the swarm secrets differ", o.Initiator.Error);
        Assert.Null(o.Initiator.Channel);
        Assert.Null(o.Responder.Channel);
    }

    [Fact]
    public void Run_SecretOnOneSideOnly_FailsSayingWhich()
    {
        using var o = HandshakeDriver.Run(_node, new(), _coordinator, new() { Psk = Psk(1) });
        Assert.Equal("the peer connects without a swarm secret, but this swarm requires one", o.Responder.Error);
        Assert.Equal("the peer refused the handshake: this swarm requires a swarm secret; you have none", o.Initiator.Error);

        using var o2 = HandshakeDriver.Run(_node, new() { Psk = Psk(1) }, _coordinator, new());
        Assert.Equal("the peer connects with a swarm secret, but this is an open swarm (no secret configured)", o2.Responder.Error);
    }

    [Fact]
    public void Run_PinnedKeyMismatch_InitiatorAbortsBeforeMessage3()
    {
        using var impostor = NodeIdentity.CreateEphemeral();
        using var o = HandshakeDriver.Run(_node, new() { Psk = Psk(1), ExpectedRemoteKey = _coordinator.PublicKey.ToArray() },
                                          impostor, new() { Psk = Psk(1) });
        Assert.Equal($"the peer's key {impostor.Fingerprint} is not the pinned key {_coordinator.Fingerprint}", o.Initiator.Error);
        Assert.Equal($"the peer refused the handshake: your key {impostor.Fingerprint} is not the key this peer pinned ({_coordinator.Fingerprint})",
                     o.Responder.Error);
        Assert.Equal(3, o.FramesExchanged); // hello, message 2, refusal: message 3 was never sent
    }

    [Fact]
    public void Run_ResponderPolicyRefusesKey_BothSidesSayWhy()
    {
        using var o = HandshakeDriver.Run(_node, new(), _coordinator,
            new() { AuthorizeRemoteKey = _ => "not vouched for by the coordinator" });
        Assert.Equal($"the peer's key {_node.Fingerprint} is not accepted: not vouched for by the coordinator", o.Responder.Error);
        Assert.Equal($"the peer refused the handshake: your key {_node.Fingerprint} is not accepted: not vouched for by the coordinator",
                     o.Initiator.Error);
    }

    [Fact]
    public void Run_DifferentPrologues_FailAtMessage2()
    {
        using var o = HandshakeDriver.Run(_node, new() { Prologue = "swarm/1"u8.ToArray() }, _coordinator, new() { Prologue = "swarm/2"u8.ToArray() });
        Assert.Contains("prologues (protocol versions) differ", o.Initiator.Error);
        Assert.Contains("different protocol versions", o.Responder.Error);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Run_AnyFrameAltered_NeverEstablishesBothSides(int alteredFrame)
    {
        using var o = HandshakeDriver.Run(_node, new() { Psk = Psk(1) }, _coordinator, new() { Psk = Psk(1) },
            (index, frame) =>
            {
                if (index != alteredFrame) return frame;
                frame[^1] ^= 0x01;
                return frame;
            });
        Assert.Equal(HandshakeStatus.Failed, o.Initiator.Status);
        Assert.NotNull(o.Initiator.Error);
        if (alteredFrame < 3) Assert.Equal(HandshakeStatus.Failed, o.Responder.Status);
    }

    [Fact]
    public void Receive_GarbageAsHello_FailsWithoutThrowing()
    {
        using var responder = SecureHandshake.CreateResponder(_coordinator, new());
        var step = responder.Receive("GET / HTTP/1.1\r\n"u8);
        Assert.Equal(HandshakeStatus.Failed, step.Status);
        Assert.Contains("expected a hello, got a frame of kind 0x47", step.Error);
        Assert.NotNull(step.Reply);
    }

    [Fact]
    public void Receive_ForgedRefusalWithControlCharacters_IsSanitized()
    {
        using var initiator = SecureHandshake.CreateInitiator(_node, new());
        initiator.Start();
        var step = initiator.Receive([0x03, .. "bad\nINFO: fake log line"u8]);
        Assert.Equal("the peer refused the handshake: bad?INFO: fake log line", step.Error);
    }

    [Fact]
    public void Create_InvalidOptions_ListsProblems()
    {
        var ex = Assert.Throws<ArgumentException>(() => SecureHandshake.CreateInitiator(_node, new() { Psk = new byte[5], ExpectedRemoteKey = new byte[3] }));
        Assert.Contains("Psk is 5 bytes", ex.Message);
        Assert.Contains("ExpectedRemoteKey is 3 bytes", ex.Message);
    }
}
