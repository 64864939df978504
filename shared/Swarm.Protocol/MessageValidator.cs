namespace Swarm.Protocol;

/// <summary>Checks the invariants MessagePack cannot express (required fields, limits, consistent tensors) of a decoded message.</summary>
public static class MessageValidator
{
    /// <summary>Validates an envelope and its body.</summary>
    /// <returns>Null when valid, else a description of the first problem.</returns>
    public static string? Validate(Envelope envelope)
    {
        if (envelope is null) return "envelope is null";
        if (envelope.MessageId < 0) return $"negative message id {envelope.MessageId}";
        if (envelope.CorrelationId < 0) return $"negative correlation id {envelope.CorrelationId}";
        if (envelope.TraceParent is { Length: > ProtocolInfo.MaxTraceParentLength })
            return $"traceparent longer than {ProtocolInfo.MaxTraceParentLength} characters";
        if (envelope.TraceState is { Length: > ProtocolInfo.MaxTraceStateLength })
            return $"tracestate longer than {ProtocolInfo.MaxTraceStateLength} characters";
        if (envelope.Body is null) return "envelope has no body";
        var error = Validate(envelope.Body);
        return error is null ? null : $"{envelope.Body.GetType().Name}: {error}";
    }

    /// <summary>Validates one message.</summary>
    /// <returns>Null when valid, else a description of the first problem.</returns>
    public static string? Validate(IMessage message) => message switch
    {
        Hello m => Text(m.NodeName, "node name", allowEmpty: false)
            ?? NonNegative(m.MemoryBudgetBytes, "memory budget")
            ?? Text(m.Device, "device", allowEmpty: false)
            ?? NonNegative(m.Threads, "threads")
            ?? Finite(m.LayerTokensPerSecond, "throughput")
            ?? OptionalRange(m.PinnedRange, "pinned range")
            ?? OptionalRange(m.HeldRange, "held range")
            ?? Text(m.DataEndpoint, "data endpoint", allowEmpty: true)
            ?? Text(m.ModelId, "model id", allowEmpty: true)
            ?? NonNegative(m.LayerWeightBytes, "layer weight bytes")
            ?? NonNegative(m.KvBytesPerTokenPerLayer, "KV bytes per token")
            ?? Text(m.DraftModel, "draft model", allowEmpty: true),
        Welcome m => NonNegative(m.NodeId, "node id") ?? NonNegative(m.HeartbeatIntervalMs, "heartbeat interval")
            ?? Text(m.ModelSource, "model source", allowEmpty: true)
            ?? (m.Members is { } members ? NonNegative(members.Version, "members version") ?? Keys(members.Keys) : null)
            ?? Text(m.ObservedEndpoint, "observed endpoint", allowEmpty: true),
        Introduce m => NonNegative(m.PeerNodeId, "peer node id") ?? Text(m.Target, "target", allowEmpty: false)
            ?? (m.Path is HopPath.Punched or HopPath.Relayed ? null : $"introduction path {m.Path} is not punched or relayed"),
        Refused m => Defined(m.Code) ?? Text(m.Reason, "reason", allowEmpty: true),
        AssignRange m => Range(m.Range, "range") ?? ValidateDigests(m.Tensors) ?? ValidatePeers(m.Peers),
        RangeReady m => Range(m.Range, "range")
            ?? NonNegative(m.KvBytesPerTokenPerLayer, "KV bytes per token")
            ?? NonNegative(m.MaxKvTokens, "max KV tokens"),
        Heartbeat m => Defined(m.State)
            ?? NonNegative(m.InFlightSteps, "in-flight steps")
            ?? NonNegative(m.Sessions, "sessions")
            ?? NonNegative(m.KvTokensUsed, "KV tokens used")
            ?? NonNegative(m.KvTokensCapacity, "KV capacity")
            ?? Finite(m.TokensPerSecond, "tokens/s")
            ?? OptionalRange(m.Range, "range")
            ?? Links(m.Links)
            ?? Finite(m.LayerTokensPerSecond, "benchmarked throughput")
            ?? (m.Relay is { } relay ? NonNegative(relay.Hops, "relayed hops") ?? NonNegative(relay.Datagrams, "relayed datagrams") ?? NonNegative(relay.Bytes, "relayed bytes") : null),
        RelayControl m => ValidateRelayControl(m),
        Leave m => Text(m.Reason, "reason", allowEmpty: true) ?? NonNegative(m.GraceMs, "grace"),
        Drain m => Text(m.Reason, "reason", allowEmpty: true),
        ForwardRequest m => ValidateForward(m),
        TokenResult m => NonNegative(m.Step, "step") ?? (m.TokenId < -1 ? $"token id {m.TokenId} is invalid" : null) ?? Timings(m.Timings)
            ?? (m.Logprobs is { } lp ? Logprobs(lp, "token logprobs") : null)
            ?? InputLogprobs(m.InputLogprobs)
            ?? HiddenStates(m.HiddenStates, "hidden states")
            ?? Fingerprints(m.Fingerprints)
            ?? Accepted(m.Accepted, m.TokenId)
            ?? DraftTokens(m.Drafted, "drafted"),
        StepFailed m => NonNegative(m.Step, "step") ?? Defined(m.Code) ?? Text(m.Message, "message", allowEmpty: true),
        CloseSession => null,
        Ack => null,
        ErrorReply m => Defined(m.Code) ?? Text(m.Message, "message", allowEmpty: true),
        PeerKeys m => NonNegative(m.Version, "version") ?? Keys(m.Keys),
        TensorRequest m => Digest(m.Sha256) ?? NonNegative(m.Offset, "offset")
            ?? (m.Length is < 1 or > ProtocolInfo.MaxTensorChunkBytes ? $"length {m.Length} is not in [1, {ProtocolInfo.MaxTensorChunkBytes}]" : null),
        TensorChunk m => Digest(m.Sha256) ?? NonNegative(m.Offset, "offset") ?? NonNegative(m.TotalLength, "total length")
            ?? (m.Data is null ? "data is missing"
                : m.Data.Length > ProtocolInfo.MaxTensorChunkBytes ? $"{m.Data.Length} bytes of data, limit {ProtocolInfo.MaxTensorChunkBytes}"
                : m.Offset + m.Data.Length > m.TotalLength ? $"bytes [{m.Offset}, {m.Offset + m.Data.Length}) run past the tensor's {m.TotalLength}"
                : null),
        null => "message is null",
        _ => $"unsupported message type {message.GetType().Name}",
    };

    private static string? ValidateDigests(TensorDigestEntry[]? tensors)
    {
        if (tensors is null) return "tensor digests are missing";
        if (tensors.Length > ProtocolInfo.MaxAssignedTensors) return $"{tensors.Length} tensor digests, limit {ProtocolInfo.MaxAssignedTensors}";
        foreach (var t in tensors)
        {
            if (t is null) return "a tensor digest is null";
            if (Text(t.Name, "tensor name", allowEmpty: false) is { } e) return e;
            if (t.Sha256 is not { Length: 64 } || !t.Sha256.All(char.IsAsciiHexDigitLower)) return $"tensor '{t.Name}': SHA-256 is not 64 lower-case hex digits";
            if (t.Length < 0) return $"tensor '{t.Name}': negative length";
        }
        return null;
    }

    private static string? ValidatePeers(string[]? peers)
    {
        if (peers is null) return "peers are missing";
        if (peers.Length > ProtocolInfo.MaxWeightPeers) return $"{peers.Length} peers, limit {ProtocolInfo.MaxWeightPeers}";
        foreach (var p in peers)
            if (Text(p, "peer endpoint", allowEmpty: false) is { } e) return e;
        return null;
    }

    private static string? Digest(string? sha256) =>
        sha256 is { Length: 64 } && sha256.All(char.IsAsciiHexDigitLower) ? null : "SHA-256 is not 64 lower-case hex digits";

    private static string? ValidateForward(ForwardRequest m)
    {
        if ((NonNegative(m.Step, "step") ?? NonNegative(m.StartPosition, "start position") ?? Defined(m.Kind)) is { } e) return e;
        if (m.Input is null) return "input tensor is missing";
        if (m.Input.Validate() is { } te) return "input " + te;
        if (m.Input.Shape.Length is < 2 or > 3) return $"input must have rank 2 (token ids) or 3 (hidden states), got {m.Input.Shape.Length}";
        if (m.Input.Shape.Length == 2 && m.Input.DType != WireDType.I64) return $"rank-2 input must be I64 token ids, got {m.Input.DType}";
        if (m.Input.Shape.Length == 3 && m.Input.DType == WireDType.I64) return "rank-3 input (hidden states) cannot be I64";
        if (!Enum.IsDefined(m.WireDType) || m.WireDType == WireDType.I64) return $"invalid wire dtype {m.WireDType}";
        if (m.Route is null || m.Route.Length == 0) return "route is empty";
        if (m.Route.Length > ProtocolInfo.MaxRouteHops) return $"route has {m.Route.Length} hops, limit {ProtocolInfo.MaxRouteHops}";
        for (int i = 0; i < m.Route.Length; i++)
        {
            var hop = m.Route[i];
            if (hop is null) return $"route hop {i} is null";
            if ((NonNegative(hop.NodeId, $"hop {i} node id") ?? Text(hop.Endpoint, $"hop {i} endpoint", allowEmpty: false) ?? Range(hop.Layers, $"hop {i} layers")) is { } he) return he;
            if (hop.Key is { Length: not PublicKeyLength }) return $"hop {i} key is {hop.Key.Length} bytes, not {PublicKeyLength}";
            if (!Enum.IsDefined(hop.Path)) return $"hop {i} path {hop.Path} is undefined";
            if (Text(hop.Via, $"hop {i} relay", allowEmpty: hop.Path != HopPath.Relayed) is { } ve) return ve;
            if (i > 0 && m.Route[i - 1] is { } prev && prev.Layers.End != hop.Layers.Start)
                return $"route hops {i - 1} {prev.Layers} and {i} {hop.Layers} are not contiguous";
        }
        if (m.Sampling is null) return "sampling parameters are missing";
        if (!double.IsFinite(m.Sampling.Temperature) || m.Sampling.Temperature < 0) return $"temperature {m.Sampling.Temperature} must be finite and ≥ 0";
        if (m.Sampling.TopK < 0) return $"top_k {m.Sampling.TopK} must be ≥ 0";
        if (!double.IsFinite(m.Sampling.TopP) || m.Sampling.TopP <= 0 || m.Sampling.TopP > 1) return $"top_p {m.Sampling.TopP} must be in (0, 1]";
        if (m.Logprobs is { } lp)
        {
            if (lp.Top < 0 || lp.Top > ProtocolInfo.MaxTopLogprobs) return $"top logprobs {lp.Top} must be in [0, {ProtocolInfo.MaxTopLogprobs}]";
            if (lp.ScoredTokenIds is null) return "scored token ids are missing";
            long positions = m.Input.Shape[1];
            if (lp.ScoredTokenIds.Length != 0 && lp.ScoredTokenIds.Length != positions - 1)
                return $"{lp.ScoredTokenIds.Length} scored token ids for {positions} positions (expected none or {positions - 1})";
            if (lp.ScoredTokenIds.Any(t => t < 0)) return "a scored token id is negative";
        }
        if (m.HiddenStates is { } hs)
        {
            if (hs.Layers is null || hs.Layers.Length == 0) return "hidden states: no layers";
            if (hs.Layers.Length > ProtocolInfo.MaxCapturedLayers) return $"hidden states: {hs.Layers.Length} layers, limit {ProtocolInfo.MaxCapturedLayers}";
            for (int i = 0; i < hs.Layers.Length; i++)
                if (hs.Layers[i] < 0 || (i > 0 && hs.Layers[i] <= hs.Layers[i - 1])) return "hidden states: layers must be ≥ 0 and strictly increasing";
        }
        if (m.Draft is null) return "draft is missing";
        if (m.Draft.Length > ProtocolInfo.MaxDraftTokens) return $"{m.Draft.Length} drafted tokens, limit {ProtocolInfo.MaxDraftTokens}";
        if (m.Draft.Length > 0 && m.Draft.Length >= m.Input.Shape[1]) return $"{m.Draft.Length} drafted tokens need more than the step's {m.Input.Shape[1]} positions";
        if (m.Draft.Any(t => t < 0)) return "a drafted token id is negative";
        if (m.Draft.Length > 0 && m.Logprobs is not null) return "a step with a draft cannot report logprobs";
        if (m.DraftCount < 0 || m.DraftCount > ProtocolInfo.MaxDraftTokens) return $"draft count {m.DraftCount} is outside [0, {ProtocolInfo.MaxDraftTokens}]";
        if (DraftTokens(m.DraftContext, "draft context", (int)Math.Min(int.MaxValue, m.Input.Shape[1])) is { } context) return context;
        if ((m.DraftCount > 0 || m.DraftContext.Length > 0) && m.DraftContext.Length != m.Input.Shape[1] - m.Draft.Length)
            return $"a draft context of {m.DraftContext.Length} tokens for {m.Input.Shape[1] - m.Draft.Length} positions before the draft";
        if (m.Shadow is { } sc && (sc.Shadow is null || sc.RouteLength < 1 || sc.RouteLength >= m.Route.Length
            || Text(sc.Shadow.Endpoint, "shadow endpoint", allowEmpty: false) is not null || !sc.Shadow.Layers.IsValid))
            return "invalid shadow copy order";
        return Timings(m.Timings) ?? HiddenStates(m.CapturedHiddenStates, "captured hidden states") ?? Fingerprints(m.Fingerprints);
    }

    private static string? DraftTokens(int[]? tokens, string what, int limit = ProtocolInfo.MaxDraftTokens)
    {
        if (tokens is null) return $"{what} tokens are missing";
        if (tokens.Length > limit) return $"{tokens.Length} {what} tokens, limit {limit}";
        return tokens.Any(t => t < 0) ? $"a {what} token id is negative" : null;
    }

    private static string? Accepted(int[]? accepted, int token)
    {
        if (accepted is null) return "accepted tokens are missing";
        if (accepted.Length > ProtocolInfo.MaxDraftTokens + 1) return $"{accepted.Length} accepted tokens, limit {ProtocolInfo.MaxDraftTokens + 1}";
        if (accepted.Length > 0 && accepted[0] != token) return $"the first accepted token {accepted[0]} is not the token {token}";
        return accepted.Any(t => t < 0) ? "an accepted token id is negative" : null;
    }

    private static string? Logprobs(TokenLogprobs? lp, string what)
    {
        if (lp is null) return $"{what} are null";
        if (lp.TopIds is null || lp.TopLogprobs is null) return $"{what}: top tokens are missing";
        if (lp.TopIds.Length != lp.TopLogprobs.Length) return $"{what}: {lp.TopIds.Length} top ids but {lp.TopLogprobs.Length} logprobs";
        if (lp.TopIds.Length > ProtocolInfo.MaxTopLogprobs) return $"{what}: {lp.TopIds.Length} top tokens, limit {ProtocolInfo.MaxTopLogprobs}";
        if (lp.TopIds.Any(t => t < 0)) return $"{what}: a top token id is negative";
        if (float.IsNaN(lp.Logprob) || lp.Logprob > 0 || lp.TopLogprobs.Any(v => float.IsNaN(v) || v > 0)) return $"{what}: a log-probability is NaN or positive";
        return null;
    }

    private static string? InputLogprobs(TokenLogprobs[]? all)
    {
        if (all is null) return "input logprobs are missing";
        foreach (var lp in all)
            if (Logprobs(lp, "input logprobs") is { } e) return e;
        return null;
    }

    private static string? HiddenStates(LayerHiddenStates[]? states, string what)
    {
        if (states is null) return $"{what} are missing";
        if (states.Length > ProtocolInfo.MaxCapturedLayers) return $"{what}: {states.Length} layers, limit {ProtocolInfo.MaxCapturedLayers}";
        foreach (var s in states)
        {
            if (s is null) return $"{what}: a layer is null";
            if (s.Layer < 0) return $"{what}: layer {s.Layer} is negative";
            if (s.Data is null) return $"{what}: layer {s.Layer} has no data";
            if (s.Data.Validate() is { } te) return $"{what}: layer {s.Layer}: {te}";
            if (s.Data.DType != WireDType.F32 || s.Data.Shape.Length != 2) return $"{what}: layer {s.Layer} must be F32 [positions, hidden]";
        }
        return null;
    }

    /// <summary>Most floats one fingerprint may carry (a full context of positions).</summary>
    private const int MaxFingerprintFloats = 1 << 20;

    private static string? Fingerprints(StageFingerprint[]? fingerprints)
    {
        if (fingerprints is null) return "fingerprints are missing";
        if (fingerprints.Length > ProtocolInfo.MaxRouteHops) return $"{fingerprints.Length} fingerprints, limit {ProtocolInfo.MaxRouteHops}";
        foreach (var f in fingerprints)
        {
            if (f?.Input is null || f.Output is null) return "null stage fingerprint";
            if (f.Input.Length > MaxFingerprintFloats || f.Output.Length > MaxFingerprintFloats) return "stage fingerprint too long";
            if (f.Input.Length % StageFingerprint.Width != 0 || f.Output.Length % StageFingerprint.Width != 0)
                return $"stage fingerprint lengths must be multiples of {StageFingerprint.Width}";
        }
        return null;
    }

    /// <summary>Length of a static public key (X25519).</summary>
    private const int PublicKeyLength = 32;

    /// <summary>Most keys one <see cref="PeerKeys"/> may carry.</summary>
    private const int MaxPeerKeys = 65_536;

    private static string? Keys(byte[][]? keys)
    {
        if (keys is null) return "keys are missing";
        if (keys.Length > MaxPeerKeys) return $"{keys.Length} keys, limit {MaxPeerKeys}";
        for (int i = 0; i < keys.Length; i++)
            if (keys[i] is not { Length: PublicKeyLength }) return $"key {i} is not {PublicKeyLength} bytes";
        return null;
    }

    private static string? Links(LinkReport[]? links)
    {
        if (links is null) return null;
        if (links.Length > Heartbeat.MaxLinks) return $"{links.Length} links, limit {Heartbeat.MaxLinks}";
        foreach (var l in links)
        {
            if (l is null) return "null link";
            string? error = NonNegative(l.ToNodeId, "link node id") ?? Defined(l.Path) ?? Finite(l.RttMs, "link RTT");
            if (error is not null) return error;
        }
        return null;
    }

    private static string? Timings(StageTiming[]? timings)
    {
        if (timings is null) return "timings are missing";
        if (timings.Length > ProtocolInfo.MaxRouteHops) return $"{timings.Length} timings, limit {ProtocolInfo.MaxRouteHops}";
        foreach (var t in timings)
        {
            if (t is null) return "null stage timing";
            if (!double.IsFinite(t.Milliseconds) || t.Milliseconds < 0) return $"stage timing {t.Milliseconds} ms is invalid";
        }
        return null;
    }

    private static string? Text(string? s, string what, bool allowEmpty) =>
        s is null ? $"{what} is missing"
        : !allowEmpty && s.Length == 0 ? $"{what} is empty"
        : s.Length > ProtocolInfo.MaxTextLength ? $"{what} longer than {ProtocolInfo.MaxTextLength} characters"
        : null;

    private static string? ValidateRelayControl(RelayControl m) =>
        Defined(m.Action)
        ?? (m.HopId <= 0 ? $"hop id {m.HopId} is not positive" : null)
        ?? (m.Action == RelayControlAction.Open && (!System.Net.IPAddress.TryParse(m.Upstream, out _) || !System.Net.IPAddress.TryParse(m.Downstream, out _))
            ? "an Open needs the upstream and downstream IP addresses" : null)
        ?? (m.Action == RelayControlAction.Opened && (m.UpstreamPort is < 1 or > 65535 || m.DownstreamPort is < 1 or > 65535)
            ? $"ports {m.UpstreamPort}/{m.DownstreamPort} are not in [1, 65535]" : null)
        ?? Text(m.Upstream, "upstream", allowEmpty: true) ?? Text(m.Downstream, "downstream", allowEmpty: true)
        ?? Text(m.Reason, "reason", allowEmpty: true);

    private static string? NonNegative(long v, string what) => v < 0 ? $"{what} is negative ({v})" : null;

    private static string? Finite(double v, string what) => !double.IsFinite(v) || v < 0 ? $"{what} must be finite and ≥ 0, got {v}" : null;

    private static string? Defined<T>(T value) where T : struct, Enum =>
        Enum.IsDefined(value) ? null : $"unknown {typeof(T).Name} value {value}";

    private static string? Range(LayerRange r, string what) => r.IsValid ? null : $"{what} {r} is not a valid half-open layer range";

    private static string? OptionalRange(LayerRange? r, string what) => r is { } v ? Range(v, what) : null;
}
