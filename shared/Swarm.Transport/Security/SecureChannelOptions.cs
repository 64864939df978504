namespace Swarm.Transport.Security;

/// <summary>How a <see cref="SecureHandshake"/> authenticates its peer and sets up the channel.</summary>
internal sealed class SecureChannelOptions
{
    /// <summary>Length of a pre-shared key.</summary>
    public const int PskLength = 32;

    /// <summary>
    /// The 32-byte pre-shared key (the swarm secret, turned into key bytes by the caller): the handshake is then
    /// <c>Noise_XXpsk3_25519_ChaChaPoly_SHA256</c> and completes only between holders of the same key. Null (the
    /// default) runs <c>Noise_XX_25519_ChaChaPoly_SHA256</c>: an open swarm, where anyone may connect but every peer
    /// still proves its static key and all traffic is encrypted.
    /// </summary>
    /// <remarks>
    /// The key is never sent, hashed or not. It must carry real entropy: an active attacker who answers a handshake
    /// as a responder can try guesses of a low-entropy secret offline against message 3 (pinning the responder's key
    /// stops this, as the initiator then aborts before sending message 3 to a stranger).
    /// </remarks>
    public byte[]? Psk { get; set; }

    /// <summary>
    /// Bytes both sides must agree on, hashed into the handshake and never sent (Noise's prologue): different
    /// prologues make the handshake fail. Default <c>swarm/1</c>; put protocol versions here.
    /// </summary>
    public byte[] Prologue { get; set; } = "swarm/1"u8.ToArray();

    /// <summary>
    /// The remote static public key the peer must prove (pinning, e.g. <c>--coordinator-key</c>); null accepts any
    /// key that <see cref="AuthorizeRemoteKey"/> accepts. An initiator checks it before sending message 3, so an
    /// impostor learns nothing encrypted under the PSK.
    /// </summary>
    public byte[]? ExpectedRemoteKey { get; set; }

    /// <summary>
    /// Decides on the peer's proven static key after the pin check: null to accept, else the reason for refusing
    /// (logged on both sides). E.g. "a node accepts hops only from peers the coordinator vouched for". Default: accept.
    /// </summary>
    public Func<ReadOnlyMemory<byte>, string?>? AuthorizeRemoteKey { get; set; }

    /// <summary>Settings of the record layer after the handshake.</summary>
    public RecordCipherOptions Records { get; set; } = new();

    /// <summary>
    /// Where the channel counts records and refusals; share one instance across a transport's channels to expose
    /// them as metrics. Default: a new instance per options object.
    /// </summary>
    public SecureChannelCounters Counters { get; set; } = new();

    /// <summary>Every problem with these options (empty when valid).</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (Psk != null && Psk.Length != PskLength) errors.Add($"Psk is {Psk.Length} bytes; a pre-shared key is {PskLength}");
        if (Prologue is null) errors.Add("Prologue is required (may be empty)");
        if (ExpectedRemoteKey != null && ExpectedRemoteKey.Length != PeerKey.Length)
            errors.Add($"ExpectedRemoteKey is {ExpectedRemoteKey.Length} bytes; a public key is {PeerKey.Length}");
        if (Records is null) errors.Add("Records is required");
        else errors.AddRange(Records.Validate());
        if (Counters is null) errors.Add("Counters is required");
        return errors;
    }
}
