using MessagePack;
using Swarm.Protocol;
using Xunit;

namespace Swarm.Tests.Protocol;

public class MessageCodecTests
{
    // Golden bytes: a failure here means the wire format changed. If the change is intended and
    // append-only (new keys at the end), update the hex; otherwise bump ProtocolInfo.Version.
    // Version 2: every envelope starts 97 02; SamplingParams is [nil, top_k, nil, seed, f64 temperature, f64 top_p]
    // (keys 0 and 2, the float32 fields of version 1, are retired), ForwardRequest key 9 (reply-to) is nil.
    // Appended since: Hop key 3 (the hop node's public key, bin 32 or nil); Welcome key 2 (member keys, or nil); PeerKeys (union 14);
    // ForwardRequest keys 11 (stage fingerprints) and 12 (a spot check's shadow copy order), TokenResult key 5 (fingerprints).
    private static readonly Dictionary<string, string> s_golden = new()
    {
        ["Hello"] = "9702010000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192009AA76770752D626F7802CF0000000200000000A6637564613A3008CB40934A0000000000920006C0B03139322E3136382E312E353A37383031AB7079746869612D3136306D",
        ["Welcome"] = "9702020100D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192019407CD03E8BB68747470733A2F2F682F6F2F6E2F7265736F6C76652F6D61696E2FC0",
        ["Refused"] = "9702030100D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192029202AF70726F746F636F6C203220213D2031",
        ["AssignRange"] = "9702040000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192039392060C2A9193D9266770745F6E656F782E6C61796572732E362E617474656E74696F6E2E64656E73652E62696173D94061616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161CD0600",
        ["RangeReady"] = "9702050000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192049492060C2ACD1800CE000186A0",
        ["Heartbeat"] = "9702060000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192059A020305CD1000CE000186A0CB404BA0000000000092060CCD0100CD186A02",
        ["Leave"] = "9702070000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920692A75349475445524DCD1388",
        ["Drain"] = "9702080000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920791A9726562616C616E6365",
        ["ForwardRequest"] = "97020900CCC8D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192089D64CCC8030111930193010104C408003C004000C00000929402AE3132372E302E302E313A37383031920204C42022222222222222222222222222222222222222222222222222222222222222229403AD31302E302E302E333A37383032920406C00196C028C0CD04D2CB3FE6666666666666CB3FECCCCCCCCCCCCDC0919201CB3FF800000000000091950190DC0010CA00000000CA3F000000CA3F800000CA3FC00000CA40000000CA40200000CA40400000CA40600000CA40800000CA40900000CA40A00000CA40B00000CA40C00000CA40D00000CA40E00000CA40F00000FFCA0000000093019404AE3132372E302E302E313A37303034920204C0CCC9",
        ["TokenResult"] = "97020A00CCC8D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192099664CCC803CDC350929201CB3FF80000000000009202CB4002000000000000919502DC0010CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000DC0010CA00000000CABE800000CABF000000CABF400000CABF800000CABFA00000CABFC00000CABFE00000CAC0000000CAC0100000CAC0200000CAC0300000CAC0400000CAC0500000CAC0600000CAC070000007CA3F000000",
        ["StepFailed"] = "97020B00CCC8D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920A9664CCC803020DB26E6F6465203320756E726561636861626C65",
        ["CloseSession"] = "97020C00CCC8D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920B91CCC8",
        ["Ack"] = "97020D0C00D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920C90",
        ["PeerKeys"] = "97020F0000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920E920792C4202222222222222222222222222222222222222222222222222222222222222222C4203333333333333333333333333333333333333333333333333333333333333333",
        ["ErrorReply"] = "97020E0900D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920D9204B2696E626F756E642071756575652066756C6C",
    };

    // Version 2 before the model source keys (Welcome key 2, AssignRange key 2): such senders still decode, with defaults.
    private const string WelcomeWithoutSource = "9702020100D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192019207CD03E8";
    private const string AssignRangeWithoutDigests = "9702040000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192039292060C2A";

    [Fact]
    public void MessagesWithoutTheModelSourceKeys_StillDecode_WithEmptyDefaults()
    {
        Assert.True(MessageCodec.Default.TryDeserialize(Convert.FromHexString(WelcomeWithoutSource), out var welcome, out var error), error);
        var w = Assert.IsType<Welcome>(welcome.Body);
        Assert.Equal((7, ""), (w.NodeId, w.ModelSource));
        Assert.True(MessageCodec.Default.TryDeserialize(Convert.FromHexString(AssignRangeWithoutDigests), out var assign, out error), error);
        var a = Assert.IsType<AssignRange>(assign.Body);
        Assert.Equal((new LayerRange(6, 12), 42L), (a.Range, a.AssignmentId));
        Assert.Empty(a.Tensors);
    }

    [Fact]
    public void AssignRange_WithAMalformedDigest_IsRejected()
    {
        var good = new TensorDigestEntry { Name = "t", Sha256 = new string('0', 64), Length = 4 };
        Assert.Null(MessageValidator.Validate(new AssignRange { Range = new LayerRange(0, 1), Tensors = [good] }));
        Assert.Contains("SHA-256", MessageValidator.Validate(new AssignRange { Range = new LayerRange(0, 1), Tensors = [good with { Sha256 = "ABC" }] }));
        Assert.Contains("negative length", MessageValidator.Validate(new AssignRange { Range = new LayerRange(0, 1), Tensors = [good with { Length = -1 }] }));
        Assert.Contains("limit", MessageValidator.Validate(new AssignRange
        {
            Range = new LayerRange(0, 1), Tensors = Enumerable.Repeat(good, ProtocolInfo.MaxAssignedTensors + 1).ToArray(),
        }));
    }

    public static TheoryData<string> Kinds()
    {
        var data = new TheoryData<string>();
        foreach (var k in ProtocolSamples.All.Keys) data.Add(k);
        return data;
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Serialize_EveryKind_MatchesGoldenBytes(string kind)
    {
        var hex = Convert.ToHexString(MessageCodec.Default.Serialize(ProtocolSamples.All[kind]));
        Assert.True(s_golden.ContainsKey(kind), $"no golden bytes for {kind}; actual: {hex}");
        Assert.Equal(s_golden[kind], hex);
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Deserialize_GoldenBytes_RoundTripsToSameBytes(string kind)
    {
        var bytes = Convert.FromHexString(s_golden[kind]);
        Assert.True(MessageCodec.Default.TryDeserialize(bytes, out var envelope, out var error), error);
        Assert.Equal(ProtocolSamples.All[kind].Body.GetType(), envelope.Body.GetType());
        Assert.Equal(ProtocolSamples.All[kind].MessageId, envelope.MessageId);
        Assert.Equal(s_golden[kind], Convert.ToHexString(MessageCodec.Default.Serialize(envelope)));
    }

    [Fact]
    public void Golden_CoversEveryUnionMember()
    {
        var unionTypes = typeof(IMessage).GetCustomAttributes(typeof(UnionAttribute), false).Cast<UnionAttribute>().Select(u => u.SubType.Name).ToHashSet();
        Assert.Equal(unionTypes.Order(), ProtocolSamples.All.Keys.Order());
        Assert.Equal(unionTypes.Order(), s_golden.Keys.Order());
    }

    [Fact]
    public void TryDeserialize_ForwardRequest_PreservesFields()
    {
        var original = (ForwardRequest)ProtocolSamples.All["ForwardRequest"].Body;
        var bytes = MessageCodec.Default.Serialize(ProtocolSamples.All["ForwardRequest"]);
        Assert.True(MessageCodec.Default.TryDeserialize(bytes, out var envelope, out var error), error);
        var copy = Assert.IsType<ForwardRequest>(envelope.Body);
        Assert.Equal(original.Input.Data.ToArray(), copy.Input.Data.ToArray());
        Assert.Equal(original.Input.Shape, copy.Input.Shape);
        Assert.Equal(original.Route.Select(h => (h.NodeId, h.Endpoint, h.Layers)), copy.Route.Select(h => (h.NodeId, h.Endpoint, h.Layers)));
        Assert.Equal(original.Sampling, copy.Sampling);
        Assert.Equal(original.Timings.Single(), copy.Timings.Single());
        Assert.Equal(200, envelope.SessionId);
        Assert.True(envelope.TryGetParentContext(out var ctx));
        Assert.Equal("0af7651916cd43dd8448eb211c80319c", ctx.TraceId.ToHexString());
        Assert.Equal("swarm=1", ctx.TraceState);
    }

    [Fact]
    public void TryDeserialize_Empty_ReturnsError()
    {
        Assert.False(MessageCodec.Default.TryDeserialize(ReadOnlyMemory<byte>.Empty, out _, out var error));
        Assert.Equal("empty message", error);
    }

    [Fact]
    public void TryDeserialize_EveryTruncation_ReturnsErrorWithoutThrowing()
    {
        var bytes = MessageCodec.Default.Serialize(ProtocolSamples.All["ForwardRequest"]);
        for (int len = 1; len < bytes.Length; len++)
        {
            Assert.False(MessageCodec.Default.TryDeserialize(bytes.AsMemory(0, len), out var envelope, out var error), $"truncated to {len} accepted");
            Assert.Null(envelope);
            Assert.False(string.IsNullOrEmpty(error));
        }
    }

    [Fact]
    public void TryDeserialize_RandomGarbage_NeverThrows()
    {
        var rng = new Random(12345);
        var valid = MessageCodec.Default.Serialize(ProtocolSamples.All["Heartbeat"]);
        int rejected = 0;
        for (int i = 0; i < 2000; i++)
        {
            byte[] bytes;
            if (i % 2 == 0)
            {
                bytes = new byte[rng.Next(1, 200)];
                rng.NextBytes(bytes);
            }
            else
            {
                bytes = (byte[])valid.Clone();
                for (int f = 0; f < 3; f++) bytes[rng.Next(bytes.Length)] = (byte)rng.Next(256);
            }
            if (!MessageCodec.Default.TryDeserialize(bytes, out _, out var error))
            {
                rejected++;
                Assert.False(string.IsNullOrEmpty(error));
            }
        }
        Assert.True(rejected > 1000, $"only {rejected} of 2000 corrupted inputs were rejected");
    }

    [Fact]
    public void TryDeserialize_Oversized_ReturnsSizeError()
    {
        var codec = new MessageCodec(maxMessageBytes: 64);
        var bytes = MessageCodec.Default.Serialize(ProtocolSamples.All["ForwardRequest"]);
        Assert.False(codec.TryDeserialize(bytes, out _, out var error));
        Assert.Equal($"message of {bytes.Length} bytes exceeds the limit of 64", error);
    }

    [Fact]
    public void Serialize_Oversized_ThrowsArgumentException()
    {
        var codec = new MessageCodec(maxMessageBytes: 64);
        var ex = Assert.Throws<ArgumentException>(() => codec.Serialize(ProtocolSamples.All["ForwardRequest"]));
        Assert.Contains("over the limit of 64", ex.Message);
    }

    [Fact]
    public void TryDeserialize_UnknownKind_ReportsKey()
    {
        // Envelope with union key 99 (a kind from a future version this build does not know).
        var bytes = WriteEnvelope((ref MessagePackWriter w) =>
        {
            w.WriteArrayHeader(2);
            w.Write(99);
            w.WriteArrayHeader(1);
            w.Write("future");
        });
        Assert.False(MessageCodec.Default.TryDeserialize(bytes, out _, out var error));
        Assert.Equal("unknown message kind 99", error);
    }

    [Fact]
    public void TryDeserialize_WrongVersion_ReportsVersions()
    {
        int future = ProtocolInfo.Version + 1;
        var bytes = WriteEnvelope((ref MessagePackWriter w) => { w.WriteArrayHeader(2); w.Write(12); w.WriteArrayHeader(0); }, version: future);
        Assert.False(MessageCodec.Default.TryDeserialize(bytes, out _, out var error));
        Assert.Equal($"protocol version {future} is not supported (this peer speaks {ProtocolInfo.Version})", error);
    }

    [Fact]
    public void TryDeserialize_Version1ForwardRequestWithFloatSampling_RefusedAsOldVersion()
    {
        // A version-1 sender put temperature and top-p as float32 under SamplingParams keys 0 and 2 (retired since).
        var bytes = WriteEnvelope((ref MessagePackWriter w) =>
        {
            w.WriteArrayHeader(2);
            w.Write(8);
            w.WriteArrayHeader(11);
            w.Write(100L); w.Write(200L); w.Write(0); w.Write((int)StepKind.Prefill); w.Write(0);
            w.WriteArrayHeader(3); w.Write((int)WireDType.I64); w.WriteArrayHeader(2); w.Write(1); w.Write(1); w.Write(new byte[8]);
            w.WriteArrayHeader(1); w.WriteArrayHeader(3); w.Write(1); w.Write("127.0.0.1:7801"); w.WriteArrayHeader(2); w.Write(0); w.Write(6);
            w.Write((int)WireDType.F16);
            w.WriteArrayHeader(4); w.Write(0.7f); w.Write(40); w.Write(1e-50f); w.Write(1234UL);
            w.Write("127.0.0.1:7700");
            w.WriteArrayHeader(0);
        }, version: 1);
        Assert.False(MessageCodec.Default.TryDeserialize(bytes, out _, out var error));
        Assert.Equal($"protocol version 1 is not supported (this peer speaks {ProtocolInfo.Version})", error);
    }

    [Fact]
    public void RoundTrip_TinyTopPAndTemperature_KeepTheirDoubleValue()
    {
        // float32 turned top_p 1e-50 into 0, which the validator rejects and the job died with HTTP 500.
        var fr = (ForwardRequest)ProtocolSamples.All["ForwardRequest"].Body;
        var sent = ProtocolSamples.All["ForwardRequest"] with { Body = fr with { Sampling = fr.Sampling with { TopP = 1e-50, Temperature = 1e-300 } } };
        Assert.True(MessageCodec.Default.TryDeserialize(MessageCodec.Default.Serialize(sent), out var envelope, out var error), error);
        var sampling = Assert.IsType<ForwardRequest>(envelope.Body).Sampling;
        Assert.Equal(1e-50, sampling.TopP);
        Assert.Equal(1e-300, sampling.Temperature);
    }

    [Fact]
    public void TryDeserialize_NilBody_ReportsMissingBody()
    {
        var bytes = WriteEnvelope((ref MessagePackWriter w) => w.WriteNil());
        Assert.False(MessageCodec.Default.TryDeserialize(bytes, out _, out var error));
        Assert.Equal("envelope has no body", error);
    }

    [Fact]
    public void TryDeserialize_NotAnArray_ReportsMalformed()
    {
        Assert.False(MessageCodec.Default.TryDeserialize(new byte[] { 0xA3, (byte)'a', (byte)'b', (byte)'c' }, out _, out var error));
        Assert.StartsWith("malformed message: expected an envelope array", error);
    }

    [Fact]
    public void TryDeserialize_TrailingBytes_ReportsThem()
    {
        var bytes = MessageCodec.Default.Serialize(ProtocolSamples.All["Ack"]).Concat(new byte[] { 0xC0, 0xC0 }).ToArray();
        Assert.False(MessageCodec.Default.TryDeserialize(bytes, out _, out var error));
        Assert.Equal("2 trailing bytes after the envelope", error);
    }

    [Fact]
    public void TryDeserialize_HugeDeclaredArray_ReportsMalformedWithoutAllocating()
    {
        // Hop[] route declared with 2^31-1 elements but only a few bytes follow.
        var bytes = WriteEnvelope((ref MessagePackWriter w) =>
        {
            w.WriteArrayHeader(2);
            w.Write(8);
            w.WriteArrayHeader(7);
            for (int i = 0; i < 6; i++) w.Write(0);
            w.WriteArrayHeader(int.MaxValue);
        });
        Assert.False(MessageCodec.Default.TryDeserialize(bytes, out _, out var error));
        Assert.StartsWith("malformed message", error);
    }

    [Fact]
    public void TryDeserialize_TensorShapeMismatch_ReportsInvalid()
    {
        var fr = (ForwardRequest)ProtocolSamples.All["ForwardRequest"].Body;
        var bad = ProtocolSamples.All["ForwardRequest"] with { Body = fr with { Input = fr.Input with { Shape = [1, 2, 4] } } };
        var bytes = MessagePackSerializer.Serialize(bad, MessagePackSerializerOptions.Standard); // bypasses Serialize's validation
        Assert.False(MessageCodec.Default.TryDeserialize(bytes, out _, out var error));
        Assert.Equal("invalid message: ForwardRequest: input tensor: shape [1,2,4] of F16 needs 16 bytes, got 8", error);
    }

    [Fact]
    public void TryDeserialize_NonContiguousRoute_ReportsInvalid()
    {
        var fr = (ForwardRequest)ProtocolSamples.All["ForwardRequest"].Body;
        var route = new[] { fr.Route[0], fr.Route[1] with { Layers = new LayerRange(5, 6) } };
        var bytes = MessagePackSerializer.Serialize(ProtocolSamples.All["ForwardRequest"] with { Body = fr with { Route = route } }, MessagePackSerializerOptions.Standard);
        Assert.False(MessageCodec.Default.TryDeserialize(bytes, out _, out var error));
        Assert.Equal("invalid message: ForwardRequest: route hops 0 [2,4) and 1 [5,6) are not contiguous", error);
    }

    [Fact]
    public void TryDeserialize_HopKeyOfTheWrongLength_ReportsInvalid()
    {
        var fr = (ForwardRequest)ProtocolSamples.All["ForwardRequest"].Body;
        var route = new[] { fr.Route[0] with { Key = new byte[31] }, fr.Route[1] };
        var bytes = MessagePackSerializer.Serialize(ProtocolSamples.All["ForwardRequest"] with { Body = fr with { Route = route } }, MessagePackSerializerOptions.Standard);
        Assert.False(MessageCodec.Default.TryDeserialize(bytes, out _, out var error));
        Assert.Equal("invalid message: ForwardRequest: hop 0 key is 31 bytes, not 32", error);
    }

    [Fact]
    public void TryDeserialize_PeerKeysWithAShortKey_ReportsInvalid()
    {
        var bytes = MessagePackSerializer.Serialize(ProtocolSamples.All["PeerKeys"] with { Body = new PeerKeys { Version = 1, Keys = [new byte[32], new byte[3]] } }, MessagePackSerializerOptions.Standard);
        Assert.False(MessageCodec.Default.TryDeserialize(bytes, out _, out var error));
        Assert.Equal("invalid message: PeerKeys: key 1 is not 32 bytes", error);
    }

    [Fact]
    public void Serialize_InvalidMessage_ThrowsWithReason()
    {
        var env = Envelope.Create(new Hello { NodeName = "", DataEndpoint = "x:1" });
        var ex = Assert.Throws<ArgumentException>(() => MessageCodec.Default.Serialize(env));
        Assert.StartsWith("invalid envelope: Hello: node name is empty", ex.Message);
    }

    [Fact]
    public void TryDeserialize_ExtraTrailingFieldsInBody_AreIgnored()
    {
        // Append-only evolution: a newer sender adds key 2 to ErrorReply; this build must still read it.
        var bytes = WriteEnvelope((ref MessagePackWriter w) =>
        {
            w.WriteArrayHeader(2);
            w.Write(13);
            w.WriteArrayHeader(3);
            w.Write((int)ErrorCode.Timeout);
            w.Write("slow");
            w.Write("a field from the future");
        });
        Assert.True(MessageCodec.Default.TryDeserialize(bytes, out var envelope, out var error), error);
        var reply = Assert.IsType<ErrorReply>(envelope.Body);
        Assert.Equal(ErrorCode.Timeout, reply.Code);
        Assert.Equal("slow", reply.Message);
    }

    private delegate void BodyWriter(ref MessagePackWriter writer);

    private static byte[] WriteEnvelope(BodyWriter writeBody, int version = ProtocolInfo.Version)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        var w = new MessagePackWriter(buffer);
        w.WriteArrayHeader(7);
        w.Write(version);
        w.Write(1L);
        w.Write(0L);
        w.Write(0L);
        w.WriteNil();
        w.WriteNil();
        writeBody(ref w);
        w.Flush();
        return buffer.WrittenSpan.ToArray();
    }
}
