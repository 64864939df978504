using System.Text.Json;
using NSec.Cryptography;
using Swarm.Transport.Security;
using Xunit;

namespace Swarm.Tests.Security;

/// <summary>
/// Runs every published test vector for the two protocols Swarm uses (fixtures/noise/vectors.json, copied from
/// cacophony and snow; see the README there): each handshake message byte-exact, the handshake hash, then every
/// transport message byte-exact, in both directions.
/// </summary>
public class NoiseVectorTests
{
    private static readonly string VectorFile = Path.Combine(AppContext.BaseDirectory, "fixtures", "noise", "vectors.json");

    private static JsonElement[] LoadVectors()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(VectorFile));
        return doc.RootElement.GetProperty("vectors").EnumerateArray().Select(v => v.Clone()).ToArray();
    }

    public static TheoryData<int, string> Vectors()
    {
        var data = new TheoryData<int, string>();
        var vectors = LoadVectors();
        for (int i = 0; i < vectors.Length; i++)
            data.Add(i, $"{vectors[i].GetProperty("source").GetString()}: {vectors[i].GetProperty("protocol_name").GetString()}");
        return data;
    }

    [Fact]
    public void VectorFile_HoldsBothProtocolsFromTwoSources()
    {
        var vectors = LoadVectors();
        var names = vectors.Select(v => v.GetProperty("protocol_name").GetString()).ToHashSet();
        Assert.Equal(new HashSet<string?> { NoisePattern.XX.ProtocolName, NoisePattern.XXpsk3.ProtocolName }, names);
        Assert.Equal(2, vectors.Select(v => v.GetProperty("source").GetString()).Distinct().Count());
    }

    [Theory]
    [MemberData(nameof(Vectors))]
    public void Vector_HandshakeAndTransportMessages_AreByteExact(int index, string description)
    {
        var v = LoadVectors()[index];
        var pattern = NoisePattern.FromName(v.GetProperty("protocol_name").GetString()!);
        Assert.True(pattern != null, description);

        using var initStatic = ImportPrivate(v, "init_static");
        using var respStatic = ImportPrivate(v, "resp_static");
        using var init = new NoiseHandshakeState(pattern, initiator: true, Hex(v, "init_prologue"), initStatic,
            Psk(v, "init_psks"), ImportPrivate(v, "init_ephemeral"));
        using var resp = new NoiseHandshakeState(pattern, initiator: false, Hex(v, "resp_prologue"), respStatic,
            Psk(v, "resp_psks"), ImportPrivate(v, "resp_ephemeral"));

        var messages = v.GetProperty("messages").EnumerateArray().ToArray();
        int i = 0;
        for (; !init.IsComplete; i++)
        {
            var (sender, receiver) = i % 2 == 0 ? (init, resp) : (resp, init);
            var payload = Hex(messages[i], "payload");
            var written = sender.WriteMessage(payload);
            Assert.Equal(Convert.ToHexStringLower(Hex(messages[i], "ciphertext")), Convert.ToHexStringLower(written));
            Assert.Equal(payload, receiver.ReadMessage(written));
        }
        Assert.True(resp.IsComplete);
        Assert.Equal(3, i);
        Assert.Equal(init.HandshakeHash, resp.HandshakeHash);
        if (v.TryGetProperty("handshake_hash", out var hash))
            Assert.Equal(hash.GetString(), Convert.ToHexStringLower(init.HandshakeHash));
        Assert.Equal(respStatic.PublicKey.Export(KeyBlobFormat.RawPublicKey), init.RemoteStaticPublicKey);
        Assert.Equal(initStatic.PublicKey.Export(KeyBlobFormat.RawPublicKey), resp.RemoteStaticPublicKey);

        var (initSend, initReceive) = init.TakeTransportCiphers();
        var (respSend, respReceive) = resp.TakeTransportCiphers();
        using (initSend) using (initReceive) using (respSend) using (respReceive)
        {
            int transportMessages = 0;
            for (; i < messages.Length; i++, transportMessages++)
            {
                var (send, receive) = i % 2 == 0 ? (initSend, respReceive) : (respSend, initReceive);
                var payload = Hex(messages[i], "payload");
                var ciphertext = send.EncryptWithAd(ReadOnlySpan<byte>.Empty, payload);
                Assert.Equal(Convert.ToHexStringLower(Hex(messages[i], "ciphertext")), Convert.ToHexStringLower(ciphertext));
                Assert.Equal(payload, receive.DecryptWithAd(ReadOnlySpan<byte>.Empty, ciphertext));
            }
            Assert.True(transportMessages >= 2, "the vector should exercise both transport directions");
        }
    }

    private static byte[] Hex(JsonElement element, string property) => Convert.FromHexString(element.GetProperty(property).GetString()!);

    private static byte[] Psk(JsonElement v, string property) =>
        v.TryGetProperty(property, out var psks) && psks.GetArrayLength() > 0
            ? Convert.FromHexString(psks[0].GetString()!)
            : [];

    private static Key ImportPrivate(JsonElement v, string property) =>
        Key.Import(KeyAgreementAlgorithm.X25519, Hex(v, property), KeyBlobFormat.RawPrivateKey,
            new KeyCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport });
}
