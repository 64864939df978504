namespace Swarm.Transport.Security;

/// <summary>The tokens of a Noise message pattern (spec rev 34, §7 and §9 for <c>psk</c>).</summary>
internal enum NoiseToken
{
    /// <summary>Send or receive an ephemeral public key.</summary>
    E,
    /// <summary>Send or receive a static public key (encrypted once a key is set).</summary>
    S,
    /// <summary>DH(initiator ephemeral, responder ephemeral).</summary>
    EE,
    /// <summary>DH(initiator ephemeral, responder static).</summary>
    ES,
    /// <summary>DH(initiator static, responder ephemeral).</summary>
    SE,
    /// <summary>DH(initiator static, responder static).</summary>
    SS,
    /// <summary>MixKeyAndHash(psk).</summary>
    Psk,
}

/// <summary>
/// A handshake pattern with its full protocol name. Only the two patterns Swarm runs are defined, both with
/// DH 25519, cipher ChaChaPoly and hash SHA256, and neither has pre-messages.
/// </summary>
internal sealed class NoisePattern
{
    /// <summary>
    /// <c>Noise_XX_25519_ChaChaPoly_SHA256</c>: mutual authentication of static keys learned during the handshake,
    /// no pre-shared key (an open swarm).
    /// <code>
    /// -> e
    /// &lt;- e, ee, s, es
    /// -> s, se
    /// </code>
    /// </summary>
    public static readonly NoisePattern XX = new("Noise_XX_25519_ChaChaPoly_SHA256", usesPsk: false,
    [
        [NoiseToken.E],
        [NoiseToken.E, NoiseToken.EE, NoiseToken.S, NoiseToken.ES],
        [NoiseToken.S, NoiseToken.SE],
    ]);

    /// <summary>
    /// <c>Noise_XXpsk3_25519_ChaChaPoly_SHA256</c>: XX with the pre-shared key mixed in at the end of the third
    /// message, so only holders of the swarm secret complete the handshake.
    /// <code>
    /// -> e
    /// &lt;- e, ee, s, es
    /// -> s, se, psk
    /// </code>
    /// </summary>
    public static readonly NoisePattern XXpsk3 = new("Noise_XXpsk3_25519_ChaChaPoly_SHA256", usesPsk: true,
    [
        [NoiseToken.E],
        [NoiseToken.E, NoiseToken.EE, NoiseToken.S, NoiseToken.ES],
        [NoiseToken.S, NoiseToken.SE, NoiseToken.Psk],
    ]);

    private NoisePattern(string protocolName, bool usesPsk, NoiseToken[][] messages)
    {
        ProtocolName = protocolName;
        UsesPsk = usesPsk;
        Messages = messages;
    }

    /// <summary>The full protocol name, hashed into h at the start of the handshake.</summary>
    public string ProtocolName { get; }

    /// <summary>
    /// True for psk patterns: every <c>e</c> token then also calls MixKey(e.public_key) (spec §9.2), and a PSK
    /// must be supplied.
    /// </summary>
    public bool UsesPsk { get; }

    /// <summary>The message patterns in order; even indices are sent by the initiator.</summary>
    public IReadOnlyList<NoiseToken[]> Messages { get; }

    /// <summary>The pattern for a protocol name, or null when it is not one of the two supported.</summary>
    public static NoisePattern? FromName(string protocolName) =>
        protocolName == XX.ProtocolName ? XX : protocolName == XXpsk3.ProtocolName ? XXpsk3 : null;

    /// <inheritdoc />
    public override string ToString() => ProtocolName;
}
