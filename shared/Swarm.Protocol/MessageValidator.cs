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
            ?? Text(m.DataEndpoint, "data endpoint", allowEmpty: false)
            ?? Text(m.ModelId, "model id", allowEmpty: true),
        Welcome m => NonNegative(m.NodeId, "node id") ?? NonNegative(m.HeartbeatIntervalMs, "heartbeat interval")
            ?? Text(m.ModelSource, "model source", allowEmpty: true)
            ?? (m.Members is { } members ? NonNegative(members.Version, "members version") ?? Keys(members.Keys) : null),
        Refused m => Defined(m.Code) ?? Text(m.Reason, "reason", allowEmpty: true),
        AssignRange m => Range(m.Range, "range") ?? ValidateDigests(m.Tensors),
        RangeReady m => Range(m.Range, "range")
            ?? NonNegative(m.KvBytesPerTokenPerLayer, "KV bytes per token")
            ?? NonNegative(m.MaxKvTokens, "max KV tokens"),
        Heartbeat m => Defined(m.State)
            ?? NonNegative(m.InFlightSteps, "in-flight steps")
            ?? NonNegative(m.Sessions, "sessions")
            ?? NonNegative(m.KvTokensUsed, "KV tokens used")
            ?? NonNegative(m.KvTokensCapacity, "KV capacity")
            ?? Finite(m.TokensPerSecond, "tokens/s")
            ?? OptionalRange(m.Range, "range"),
        Leave m => Text(m.Reason, "reason", allowEmpty: true) ?? NonNegative(m.GraceMs, "grace"),
        Drain m => Text(m.Reason, "reason", allowEmpty: true),
        ForwardRequest m => ValidateForward(m),
        TokenResult m => NonNegative(m.Step, "step") ?? (m.TokenId < -1 ? $"token id {m.TokenId} is invalid" : null) ?? Timings(m.Timings) ?? Fingerprints(m.Fingerprints),
        StepFailed m => NonNegative(m.Step, "step") ?? Defined(m.Code) ?? Text(m.Message, "message", allowEmpty: true),
        CloseSession => null,
        Ack => null,
        ErrorReply m => Defined(m.Code) ?? Text(m.Message, "message", allowEmpty: true),
        PeerKeys m => NonNegative(m.Version, "version") ?? Keys(m.Keys),
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
            if (i > 0 && m.Route[i - 1] is { } prev && prev.Layers.End != hop.Layers.Start)
                return $"route hops {i - 1} {prev.Layers} and {i} {hop.Layers} are not contiguous";
        }
        if (m.Sampling is null) return "sampling parameters are missing";
        if (!double.IsFinite(m.Sampling.Temperature) || m.Sampling.Temperature < 0) return $"temperature {m.Sampling.Temperature} must be finite and ≥ 0";
        if (m.Sampling.TopK < 0) return $"top_k {m.Sampling.TopK} must be ≥ 0";
        if (!double.IsFinite(m.Sampling.TopP) || m.Sampling.TopP <= 0 || m.Sampling.TopP > 1) return $"top_p {m.Sampling.TopP} must be in (0, 1]";
        if (m.Shadow is { } sc && (sc.Shadow is null || sc.RouteLength < 1 || sc.RouteLength >= m.Route.Length
            || Text(sc.Shadow.Endpoint, "shadow endpoint", allowEmpty: false) is not null || !sc.Shadow.Layers.IsValid))
            return "invalid shadow copy order";
        return Timings(m.Timings) ?? Fingerprints(m.Fingerprints);
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

    private static string? NonNegative(long v, string what) => v < 0 ? $"{what} is negative ({v})" : null;

    private static string? Finite(double v, string what) => !double.IsFinite(v) || v < 0 ? $"{what} must be finite and ≥ 0, got {v}" : null;

    private static string? Defined<T>(T value) where T : struct, Enum =>
        Enum.IsDefined(value) ? null : $"unknown {typeof(T).Name} value {value}";

    private static string? Range(LayerRange r, string what) => r.IsValid ? null : $"{what} {r} is not a valid half-open layer range";

    private static string? OptionalRange(LayerRange? r, string what) => r is { } v ? Range(v, what) : null;
}
