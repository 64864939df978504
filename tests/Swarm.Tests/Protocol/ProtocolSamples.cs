using Swarm.Protocol;

namespace Swarm.Tests.Protocol;

/// <summary>Fixed instances of every message kind, serialized by the golden-bytes tests.</summary>
internal static class ProtocolSamples
{
    private const string TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    private static Envelope Wrap(IMessage body, long id, long correlation = 0, long session = 0) => new()
    {
        MessageId = id,
        CorrelationId = correlation,
        SessionId = session,
        TraceParent = TraceParent,
        TraceState = "swarm=1",
        Body = body,
    };

    public static readonly Hop[] Route =
    [
        new Hop { NodeId = 2, Endpoint = "127.0.0.1:7801", Layers = new LayerRange(2, 4), Key = Enumerable.Repeat((byte)0x22, 32).ToArray() },
        new Hop { NodeId = 3, Endpoint = "10.0.0.3:7802", Layers = new LayerRange(4, 6), Path = HopPath.Relayed, Via = "10.0.0.9:40001" },
    ];

    /// <summary>Layer 5's output at one position of hidden size 2: f32 [1, 2] = (1.0, -2.0).</summary>
    public static readonly LayerHiddenStates Captured = new()
    {
        Layer = 5,
        Data = new WireTensor { DType = WireDType.F32, Shape = [1, 2], Data = new byte[] { 0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0 } },
    };

    public static readonly IReadOnlyDictionary<string, Envelope> All = new Dictionary<string, Envelope>
    {
        ["Hello"] = Wrap(new Hello
        {
            NodeName = "gpu-box",
            MemoryBudgetBytes = 8L << 30,
            Device = "cuda:0",
            Threads = 8,
            LayerTokensPerSecond = 1234.5,
            PinnedRange = new LayerRange(0, 6),
            HeldRange = null,
            DataEndpoint = "192.168.1.5:7801",
            ModelId = "pythia-160m",
            SharesWeights = true,
            LayerWeightBytes = 7_137_792,
            KvBytesPerTokenPerLayer = 3072,
            OffersRelay = true,
            DraftModel = "codelm-tiny-draft:0123456789abcdef",
        }, id: 1),
        ["Welcome"] = Wrap(new Welcome { NodeId = 7, HeartbeatIntervalMs = 1000, ModelSource = "https://h/o/n/resolve/main/", ObservedEndpoint = "203.0.113.7:40123", Reachable = false, RelayAccepted = true }, id: 2, correlation: 1),
        ["Refused"] = Wrap(new Refused { Code = ErrorCode.VersionMismatch, Reason = "protocol 2 != 1" }, id: 3, correlation: 1),
        ["AssignRange"] = Wrap(new AssignRange
        {
            Range = new LayerRange(6, 12), AssignmentId = 42,
            Tensors = [new TensorDigestEntry { Name = "gpt_neox.layers.6.attention.dense.bias", Sha256 = new string('a', 64), Length = 1536 }],
            Peers = ["10.0.0.3:7802"],
        }, id: 4),
        ["RangeReady"] = Wrap(new RangeReady { Range = new LayerRange(6, 12), AssignmentId = 42, KvBytesPerTokenPerLayer = 6144, MaxKvTokens = 100_000 }, id: 5),
        ["Heartbeat"] = Wrap(new Heartbeat
        {
            State = NodeReadiness.Ready,
            InFlightSteps = 3,
            Sessions = 5,
            KvTokensUsed = 4096,
            KvTokensCapacity = 100_000,
            TokensPerSecond = 55.25,
            Range = new LayerRange(6, 12),
            KvBlocksUsed = 256,
            KvBlocksTotal = 6250,
            WaitingSessions = 2,
            Links = [new LinkReport { ToNodeId = 4, Path = HopPath.Punched, RttMs = 12.5 }],
            LayerTokensPerSecond = 2000.5,
            Relay = new RelayUsage { Hops = 1, Datagrams = 10, Bytes = 4000 },
        }, id: 6),
        ["Leave"] = Wrap(new Leave { Reason = "SIGTERM", GraceMs = 5000 }, id: 7),
        ["Drain"] = Wrap(new Drain { Reason = "rebalance" }, id: 8),
        ["ForwardRequest"] = Wrap(new ForwardRequest
        {
            JobId = 100,
            SessionId = 200,
            Step = 3,
            Kind = StepKind.Decode,
            StartPosition = 17,
            Input = new WireTensor { DType = WireDType.F16, Shape = [1, 1, 4], Data = new byte[] { 0x00, 0x3C, 0x00, 0x40, 0x00, 0xC0, 0x00, 0x00 } },
            Route = Route,
            WireDType = WireDType.F16,
            Sampling = new SamplingParams { Temperature = 0.7, TopK = 40, TopP = 0.9, Seed = 1234 },
            Timings = [new StageTiming { NodeId = 1, Milliseconds = 1.5 }],
            Logprobs = new LogprobsRequest { Top = 2 },
            HiddenStates = new HiddenStatesRequest { Layers = [5, 7], AllPositions = true },
            CapturedHiddenStates = [Captured],
            Fingerprints = [new StageFingerprint { NodeId = 1, Output = [.. Enumerable.Range(0, StageFingerprint.Width).Select(i => i * 0.5f)] }],
            Shadow = new ShadowCopy { RouteLength = 1, SessionId = 201, Shadow = new Hop { NodeId = 4, Endpoint = "127.0.0.1:7004", Layers = new LayerRange(2, 4) } },
            DraftContext = [42],
            DraftCount = 2,
        }, id: 9, session: 200),
        ["TokenResult"] = Wrap(new TokenResult
        {
            JobId = 100,
            SessionId = 200,
            Step = 3,
            TokenId = 50_000,
            Timings = [new StageTiming { NodeId = 1, Milliseconds = 1.5 }, new StageTiming { NodeId = 2, Milliseconds = 2.25 }],
            Logprobs = new TokenLogprobs { Logprob = -0.5f, TopIds = [7, 9], TopLogprobs = [-0.25f, -1.5f] },
            InputLogprobs = [new TokenLogprobs { Logprob = -2f }],
            HiddenStates = [Captured],
            Fingerprints = [new StageFingerprint { NodeId = 2, Input = new float[StageFingerprint.Width], Output = [.. Enumerable.Range(0, StageFingerprint.Width).Select(i => -i * 0.25f)], RunnerUp = 7, Margin = 0.5f }],
            Accepted = [50_000, 17],
            Drafted = [5, 6, 7],
        }, id: 10, session: 200),
        ["StepFailed"] = Wrap(new StepFailed { JobId = 100, SessionId = 200, Step = 3, NodeId = 2, Code = ErrorCode.NextHopUnreachable, Message = "node 3 unreachable" }, id: 11, session: 200),
        ["CloseSession"] = Wrap(new CloseSession { SessionId = 200 }, id: 12, session: 200),
        ["Ack"] = Wrap(new Ack(), id: 13, correlation: 12),
        ["ErrorReply"] = Wrap(new ErrorReply { Code = ErrorCode.Overloaded, Message = "inbound queue full" }, id: 14, correlation: 9),
        ["PeerKeys"] = Wrap(new PeerKeys { Version = 7, Keys = [Enumerable.Repeat((byte)0x22, 32).ToArray(), Enumerable.Repeat((byte)0x33, 32).ToArray()] }, id: 15),
        ["TensorRequest"] = Wrap(new TensorRequest { Sha256 = new string('b', 64), Offset = 1 << 20, Length = 4096 }, id: 15),
        ["TensorChunk"] = Wrap(new TensorChunk { Sha256 = new string('b', 64), Offset = 1 << 20, TotalLength = (1 << 20) + 4, Data = [1, 2, 3, 4] }, id: 16, correlation: 15),
        ["Introduce"] = Wrap(new Introduce { PeerNodeId = 2, Target = "198.51.100.4:7801", Path = HopPath.Punched }, id: 17),
        ["RelayControl"] = Wrap(new RelayControl { Action = RelayControlAction.Opened, HopId = 7, UpstreamPort = 40001, DownstreamPort = 40002 }, id: 18),
    };
}
