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
    // Welcome keys 4-5 (observed endpoint, reachable); Hop keys 4-5 (path, relay endpoint); Introduce (union 17);
    // Hello key 13 (offers relay), Welcome key 6 (relay accepted), Heartbeat key 12 (relay usage), RelayControl (union 18);
    // Hello key 14 (draft model), ForwardRequest keys 17-18 (draft context, draft count), TokenResult key 10 (drafted tokens).
    private static readonly Dictionary<string, string> s_golden = new()
    {
        ["Hello"] = "9702010000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192009FA76770752D626F7802CF0000000200000000A6637564613A3008CB40934A0000000000920006C0B03139322E3136382E312E353A37383031AB7079746869612D3136306DC3CE006CEA00CD0C00C3D922636F64656C6D2D74696E792D64726166743A30313233343536373839616263646566",
        ["Welcome"] = "9702020100D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192019707CD03E8BB68747470733A2F2F682F6F2F6E2F7265736F6C76652F6D61696E2FC0B13230332E302E3131332E373A3430313233C2C3",
        ["Refused"] = "9702030100D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192029202AF70726F746F636F6C203220213D2031",
        ["AssignRange"] = "9702040000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192039492060C2A9193D9266770745F6E656F782E6C61796572732E362E617474656E74696F6E2E64656E73652E62696173D94061616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161CD060091AD31302E302E302E333A37383032",
        ["RangeReady"] = "9702050000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192049492060C2ACD1800CE000186A0",
        ["Heartbeat"] = "9702060000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192059D020305CD1000CE000186A0CB404BA0000000000092060CCD0100CD186A0291930401CB4029000000000000CB409F42000000000093010ACD0FA0",
        ["Leave"] = "9702070000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920692A75349475445524DCD1388",
        ["Drain"] = "9702080000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920791A9726562616C616E6365",
        ["ForwardRequest"] = "97020900CCC8D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D319208DC001364CCC8030111930193010104C408003C004000C00000929602AE3132372E302E302E313A37383031920204C420222222222222222222222222222222222222222222222222222222222222222200A09603AD31302E302E302E333A37383032920406C002AE31302E302E302E393A34303030310196C028C0CD04D2CB3FE6666666666666CB3FECCCCCCCCCCCCDC0919201CB3FF800000000000092029092920507C39192059300920102C4080000803F000000C091950190DC0010CA00000000CA3F000000CA3F800000CA3FC00000CA40000000CA40200000CA40400000CA40600000CA40800000CA40900000CA40A00000CA40B00000CA40C00000CA40D00000CA40E00000CA40F00000FFCA0000000093019604AE3132372E302E302E313A37303034920204C000A0CCC990912A02",
        ["TokenResult"] = "97020A00CCC8D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192099B64CCC803CDC350929201CB3FF80000000000009202CB400200000000000093CABF00000092070992CABE800000CABFC000009193CAC000000090909192059300920102C4080000803F000000C0919502DC0010CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000CA00000000DC0010CA00000000CABE800000CABF000000CABF400000CABF800000CABFA00000CABFC00000CABFE00000CAC0000000CAC0100000CAC0200000CAC0300000CAC0400000CAC0500000CAC0600000CAC070000007CA3F00000092CDC3501193050607",
        ["StepFailed"] = "97020B00CCC8D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920A9664CCC803020DB26E6F6465203320756E726561636861626C65",
        ["CloseSession"] = "97020C00CCC8D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920B91CCC8",
        ["Ack"] = "97020D0C00D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920C90",
        ["PeerKeys"] = "97020F0000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920E920792C4202222222222222222222222222222222222222222222222222222222222222222C4203333333333333333333333333333333333333333333333333333333333333333",
        ["RelayControl"] = "9702120000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D319212970207A0A0CD9C41CD9C42A0",
        ["Introduce"] = "9702110000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192119302B13139382E35312E3130302E343A3738303101",
        ["ErrorReply"] = "97020E0900D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920D9204B2696E626F756E642071756575652066756C6C",
        ["TensorRequest"] = "97020F0000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31920F93D94062626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262CE00100000CD1000",
        ["TensorChunk"] = "9702100F00D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D31921094D94062626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262CE00100000CE00100004C40401020304",
    };

    // Version 2 before the model source keys (Welcome key 2, AssignRange key 2): such senders still decode, with defaults.
    private const string WelcomeWithoutSource = "9702020100D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192019207CD03E8";
    private const string AssignRangeWithoutDigests = "9702040000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192039292060C2A";

    // Version 2 before the logprob and hidden-state keys (ForwardRequest keys 11–13, TokenResult keys 5–7).
    private const string ForwardRequestWithoutLogprobs = "97020900CCC8D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192089B64CCC8030111930193010104C408003C004000C00000929302AE3132372E302E302E313A373830319202049303AD31302E302E302E333A373830329204060196C028C0CD04D2CB3FE6666666666666CB3FECCCCCCCCCCCCDC0919201CB3FF8000000000000";
    private const string TokenResultWithoutLogprobs = "97020A00CCC8D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192099564CCC803CDC350929201CB3FF80000000000009202CB4002000000000000";

    [Fact]
    public void StepMessagesWithoutTheLogprobAndHiddenStateKeys_StillDecode_AskingAndCarryingNone()
    {
        Assert.True(MessageCodec.Default.TryDeserialize(Convert.FromHexString(ForwardRequestWithoutLogprobs), out var fr, out var error), error);
        var f = Assert.IsType<ForwardRequest>(fr.Body);
        Assert.Equal((3, 17), (f.Step, f.StartPosition));
        Assert.Null(f.Logprobs);
        Assert.Null(f.HiddenStates);
        Assert.Empty(f.CapturedHiddenStates);
        Assert.True(MessageCodec.Default.TryDeserialize(Convert.FromHexString(TokenResultWithoutLogprobs), out var tr, out error), error);
        var t = Assert.IsType<TokenResult>(tr.Body);
        Assert.Equal(50_000, t.TokenId);
        Assert.Null(t.Logprobs);
        Assert.Empty(t.InputLogprobs);
        Assert.Empty(t.HiddenStates);
    }

    [Fact]
    public void ForwardRequest_WithInconsistentLogprobOrHiddenStateFields_IsRejected()
    {
        var fr = (ForwardRequest)ProtocolSamples.All["ForwardRequest"].Body;   // one input position
        Assert.Null(MessageValidator.Validate(fr));
        Assert.Contains("scored token ids", MessageValidator.Validate(fr with { Logprobs = new LogprobsRequest { Top = 1, ScoredTokenIds = [4] } }));
        Assert.Contains("top logprobs", MessageValidator.Validate(fr with { Logprobs = new LogprobsRequest { Top = ProtocolInfo.MaxTopLogprobs + 1 } }));
        Assert.Contains("strictly increasing", MessageValidator.Validate(fr with { HiddenStates = new HiddenStatesRequest { Layers = [3, 3] } }));
        var i64 = ProtocolSamples.Captured with { Data = ProtocolSamples.Captured.Data with { DType = WireDType.I64, Shape = [1, 1] } };
        Assert.Contains("F32", MessageValidator.Validate(fr with { CapturedHiddenStates = [i64] }));
        var tr = (TokenResult)ProtocolSamples.All["TokenResult"].Body;
        Assert.Null(MessageValidator.Validate(tr));
        Assert.Contains("positive", MessageValidator.Validate(tr with { Logprobs = new TokenLogprobs { Logprob = 0.5f } }));
        Assert.Contains("top ids", MessageValidator.Validate(tr with { InputLogprobs = [new TokenLogprobs { TopIds = [1] }] }));
    }

    [Fact]
    public void SpeculativeFields_Inconsistent_AreRejected()
    {
        var fr = (ForwardRequest)ProtocolSamples.All["ForwardRequest"].Body with { Logprobs = null };
        var three = fr with { Input = WireTensor.FromTokenIds([1, 2, 3]) };
        Assert.Null(MessageValidator.Validate(three with { Draft = [2, 3] }));
        Assert.Contains("more than the step's 3 positions", MessageValidator.Validate(three with { Draft = [1, 2, 3] }));
        Assert.Contains("negative", MessageValidator.Validate(three with { Draft = [-1] }));
        Assert.Contains("logprobs", MessageValidator.Validate(three with { Draft = [3], Logprobs = new LogprobsRequest { Top = 1 } }));
        var long_ = fr with { Input = WireTensor.FromTokenIds(new long[ProtocolInfo.MaxDraftTokens + 2]) };
        Assert.Contains("limit", MessageValidator.Validate(long_ with { Draft = new int[ProtocolInfo.MaxDraftTokens + 1] }));
        var tr = (TokenResult)ProtocolSamples.All["TokenResult"].Body;
        Assert.Contains("is not the token", MessageValidator.Validate(tr with { Accepted = [1, 2] }));
        Assert.Contains("negative", MessageValidator.Validate(tr with { Accepted = [tr.TokenId, -3] }));
    }

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

    // Version 2 before the weight-sharing keys (Hello key 10, AssignRange key 3, Heartbeat key 10).
    private const string HelloWithoutSharing = "9702010000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192009AA76770752D626F7802CF0000000200000000A6637564613A3008CB40934A0000000000920006C0B03139322E3136382E312E353A37383031AB7079746869612D3136306D";
    private const string AssignRangeWithoutPeers = "9702040000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192039392060C2A9193D9266770745F6E656F782E6C61796572732E362E617474656E74696F6E2E64656E73652E62696173D94061616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161CD0600";
    private const string HeartbeatWithoutBenchmark = "9702060000D93730302D30616637363531393136636434336464383434386562323131633830333139632D623761643662373136393230333333312D3031A7737761726D3D3192059A020305CD1000CE000186A0CB404BA0000000000092060CCD0100CD186A02";

    [Fact]
    public void MessagesWithoutTheWeightSharingKeys_StillDecode_AsNotSharingAndNoPeers()
    {
        Assert.True(MessageCodec.Default.TryDeserialize(Convert.FromHexString(HelloWithoutSharing), out var hello, out var error), error);
        var h = Assert.IsType<Hello>(hello.Body);
        Assert.Equal(("gpu-box", false), (h.NodeName, h.SharesWeights));
        Assert.True(MessageCodec.Default.TryDeserialize(Convert.FromHexString(AssignRangeWithoutPeers), out var assign, out error), error);
        var a = Assert.IsType<AssignRange>(assign.Body);
        Assert.Single(a.Tensors);
        Assert.Empty(a.Peers);
        Assert.True(MessageCodec.Default.TryDeserialize(Convert.FromHexString(HeartbeatWithoutBenchmark), out var heartbeat, out error), error);
        var hb = Assert.IsType<Heartbeat>(heartbeat.Body);
        Assert.Equal((2, 0.0), (hb.WaitingSessions, hb.LayerTokensPerSecond));
    }

    [Fact]
    public void TensorRequestsAndChunks_OutsideTheirLimits_AreRejected()
    {
        var request = new TensorRequest { Sha256 = new string('0', 64), Offset = 0, Length = 16 };
        Assert.Null(MessageValidator.Validate(request));
        Assert.Contains("SHA-256", MessageValidator.Validate(request with { Sha256 = "x" }));
        Assert.Contains("negative", MessageValidator.Validate(request with { Offset = -1 }));
        Assert.Contains("length", MessageValidator.Validate(request with { Length = ProtocolInfo.MaxTensorChunkBytes + 1 }));
        Assert.Contains("length", MessageValidator.Validate(request with { Length = 0 }));
        var chunk = new TensorChunk { Sha256 = new string('0', 64), Offset = 4, TotalLength = 8, Data = new byte[4] };
        Assert.Null(MessageValidator.Validate(chunk));
        Assert.Contains("run past", MessageValidator.Validate(chunk with { Data = new byte[5] }));
        Assert.Contains("limit", MessageValidator.Validate(chunk with { TotalLength = 1L << 30, Data = new byte[ProtocolInfo.MaxTensorChunkBytes + 1] }));
        var assign = new AssignRange { Range = new LayerRange(0, 1), Peers = ["127.0.0.1:1"] };
        Assert.Null(MessageValidator.Validate(assign));
        Assert.Contains("peer endpoint is empty", MessageValidator.Validate(assign with { Peers = [""] }));
        Assert.Contains("limit", MessageValidator.Validate(assign with { Peers = Enumerable.Repeat("127.0.0.1:1", ProtocolInfo.MaxWeightPeers + 1).ToArray() }));
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
