using MessagePack;
using Swarm.Protocol;
using Xunit;

namespace Swarm.Tests.Protocol;

public class MessageCodecTests
{
    // Golden bytes: a failure here means the wire format changed. If the change is intended and
    // append-only (new keys at the end), update the hex; otherwise bump ProtocolInfo.Version.
    private static readonly Dictionary<string, string> s_golden = new()
    {
        ["Hello"] = "9701010000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192009AA76770752D626F7801CF0000000200000000A6637564613A3008CB40934A0000000000920006C0B03139322E3136382E312E353A37383031AB7079746869612D3136306D",
        ["Welcome"] = "9701020100D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192019207CD03E8",
        ["Refused"] = "9701030100D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192029202AF70726F746F636F6C203220213D2031",
        ["AssignRange"] = "9701040000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192039292060C2A",
        ["RangeReady"] = "9701050000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192049492060C2ACD1800CE000186A0",
        ["Heartbeat"] = "9701060000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192059A020305CD1000CE000186A0CB404BA0000000000092060CCD0100CD186A02",
        ["Leave"] = "9701070000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920692A75349475445524DCD1388",
        ["Drain"] = "9701080000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920791A9726562616C616E6365",
        ["ForwardRequest"] = "97010900CCC8D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192089B64CCC8030111930193010104C408003C004000C00000929302AE3132372E302E302E313A373830319202049303AD31302E302E302E333A373830329204060194CA3F33333328CA3F666666CD04D2AE3132372E302E302E313A37373030919201CB3FF8000000000000",
        ["TokenResult"] = "97010A00CCC8D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192099564CCC803CDC350929201CB3FF80000000000009202CB4002000000000000",
        ["StepFailed"] = "97010B00CCC8D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920A9664CCC803020DB26E6F6465203320756E726561636861626C65",
        ["CloseSession"] = "97010C00CCC8D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920B91CCC8",
        ["Ack"] = "97010D0C00D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920C90",
        ["ErrorReply"] = "97010E0900D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920D9204B2696E626F756E642071756575652066756C6C",
    };

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
        var bytes = WriteEnvelope((ref MessagePackWriter w) => { w.WriteArrayHeader(2); w.Write(12); w.WriteArrayHeader(0); }, version: 2);
        Assert.False(MessageCodec.Default.TryDeserialize(bytes, out _, out var error));
        Assert.Equal($"protocol version 2 is not supported (this peer speaks {ProtocolInfo.Version})", error);
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
