using System.Buffers.Binary;
using NSec.Cryptography;
using Swarm.Transport.Security;
using Xunit;
using BclChaCha = System.Security.Cryptography.ChaCha20Poly1305;

namespace Swarm.Tests.Security;

/// <summary>What the vectors do not cover: Rekey, nonce handling and failure behaviour of the Noise state machine.</summary>
public class NoiseStateTests
{
    private static readonly byte[] KeyBytes = Enumerable.Range(1, 32).Select(i => (byte)i).ToArray();

    private static byte[] BclNonce(ulong counter)
    {
        var nonce = new byte[12];
        BinaryPrimitives.WriteUInt64LittleEndian(nonce.AsSpan(4), counter);
        return nonce;
    }

    [Fact]
    public void EncryptWithAd_MatchesAnIndependentChaChaPolyWithTheNoiseNonce()
    {
        using var cipher = new NoiseCipherState();
        cipher.InitializeKey(KeyBytes);
        cipher.SetNonce(0x0102030405060708);
        var ours = cipher.EncryptWithAd("ad"u8, "hello"u8);

        using var bcl = new BclChaCha(KeyBytes);
        var expected = new byte[5 + 16];
        bcl.Encrypt(BclNonce(0x0102030405060708), "hello"u8, expected.AsSpan(0, 5), expected.AsSpan(5), "ad"u8);
        Assert.Equal(expected, ours);
        Assert.Equal(0x0102030405060709UL, cipher.Nonce);
    }

    [Fact]
    public void Rekey_IsTheFirst32BytesOfEncryptingZerosUnderNonceMax()
    {
        using var cipher = new NoiseCipherState();
        cipher.InitializeKey(KeyBytes);
        cipher.SetNonce(5);
        cipher.Rekey();
        Assert.Equal(5UL, cipher.Nonce); // Rekey leaves n alone
        var ours = cipher.EncryptWithAd([], "after rekey"u8);

        // REKEY(k) by the spec's definition, computed with another ChaCha20-Poly1305 implementation.
        var rekeyed = new byte[32];
        var tag = new byte[16];
        using (var bcl = new BclChaCha(KeyBytes))
            bcl.Encrypt(BclNonce(ulong.MaxValue), new byte[32], rekeyed, tag);
        var expected = new byte[11 + 16];
        using (var bcl = new BclChaCha(rekeyed))
            bcl.Encrypt(BclNonce(5), "after rekey"u8, expected.AsSpan(0, 11), expected.AsSpan(11));
        Assert.Equal(expected, ours);
    }

    [Fact]
    public void DecryptWithAd_Tampered_ThrowsAndKeepsTheNonce()
    {
        using var sender = new NoiseCipherState();
        using var receiver = new NoiseCipherState();
        sender.InitializeKey(KeyBytes);
        receiver.InitializeKey(KeyBytes);
        var ciphertext = sender.EncryptWithAd([], "x"u8);
        ciphertext[0] ^= 1;
        Assert.Throws<NoiseException>(() => receiver.DecryptWithAd([], ciphertext));
        Assert.Equal(0UL, receiver.Nonce);
        ciphertext[0] ^= 1;
        Assert.Equal("x"u8.ToArray(), receiver.DecryptWithAd([], ciphertext));
    }

    [Fact]
    public void EncryptWithAd_AtTheReservedNonce_Refuses()
    {
        using var cipher = new NoiseCipherState();
        cipher.InitializeKey(KeyBytes);
        cipher.SetNonce(ulong.MaxValue);
        Assert.Throws<NoiseException>(() => cipher.EncryptWithAd([], "x"u8));
    }

    private static (NoiseHandshakeState I, NoiseHandshakeState R, Key Si, Key Sr) Pair(byte[] pskI, byte[] pskR, NoisePattern pattern)
    {
        var si = Key.Create(KeyAgreementAlgorithm.X25519);
        var sr = Key.Create(KeyAgreementAlgorithm.X25519);
        return (new NoiseHandshakeState(pattern, true, "p"u8, si, pskI), new NoiseHandshakeState(pattern, false, "p"u8, sr, pskR), si, sr);
    }

    [Fact]
    public void XXpsk3_DifferentPsks_FailsAtMessage3OnTheResponder()
    {
        var (i, r, si, sr) = Pair(new byte[32], Enumerable.Repeat((byte)1, 32).ToArray(), NoisePattern.XXpsk3);
        using (i) using (r) using (si) using (sr)
        {
            r.ReadMessage(i.WriteMessage([]));
            i.ReadMessage(r.WriteMessage([]));
            var ex = Assert.Throws<NoiseException>(() => r.ReadMessage(i.WriteMessage([])));
            Assert.Contains("handshake message 3: the payload did not authenticate", ex.Message);
            Assert.Throws<InvalidOperationException>(() => r.WriteMessage([])); // a failed state refuses further use
        }
    }

    [Fact]
    public void XX_TamperedMessage2_FailsAndRandomEphemeralsStillAgree()
    {
        var (i, r, si, sr) = Pair([], [], NoisePattern.XX);
        using (i) using (r) using (si) using (sr)
        {
            r.ReadMessage(i.WriteMessage([]));
            var message2 = r.WriteMessage("hi"u8);
            message2[40] ^= 0x80; // inside the encrypted static key
            var ex = Assert.Throws<NoiseException>(() => i.ReadMessage(message2));
            Assert.Contains("static key did not authenticate", ex.Message);
        }

        var (i2, r2, si2, sr2) = Pair([], [], NoisePattern.XX);
        using (i2) using (r2) using (si2) using (sr2)
        {
            r2.ReadMessage(i2.WriteMessage([]));
            Assert.Equal("hi"u8.ToArray(), i2.ReadMessage(r2.WriteMessage("hi"u8)));
            r2.ReadMessage(i2.WriteMessage([]));
            Assert.True(i2.IsComplete && r2.IsComplete);
            Assert.Equal(i2.HandshakeHash, r2.HandshakeHash);
            Assert.Equal(si2.PublicKey.Export(KeyBlobFormat.RawPublicKey), r2.RemoteStaticPublicKey);
        }
    }

    [Fact]
    public void ReadMessage_LowOrderEphemeral_FailsCleanly()
    {
        var (i, r, si, sr) = Pair([], [], NoisePattern.XX);
        using (i) using (r) using (si) using (sr)
        {
            r.ReadMessage(new byte[32]); // the all-zero point as the initiator's ephemeral key
            var ex = Assert.Throws<NoiseException>(() => r.WriteMessage([]));
            Assert.Contains("low-order point", ex.Message);
        }
    }

    [Fact]
    public void ReadMessage_Truncated_SaysWhatIsMissing()
    {
        var (i, r, si, sr) = Pair([], [], NoisePattern.XX);
        using (i) using (r) using (si) using (sr)
        {
            var ex = Assert.Throws<NoiseException>(() => r.ReadMessage(new byte[31]));
            Assert.Contains("too short: 31 bytes left where the ephemeral key needs 32", ex.Message);
        }
    }

    [Fact]
    public void Constructor_PskPatternWithoutPsk_Throws()
    {
        using var s = Key.Create(KeyAgreementAlgorithm.X25519);
        Assert.Throws<ArgumentException>(() => new NoiseHandshakeState(NoisePattern.XXpsk3, true, [], s, []));
        Assert.Throws<ArgumentException>(() => new NoiseHandshakeState(NoisePattern.XX, true, [], s, new byte[32]));
    }
}
