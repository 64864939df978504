using System.Security.Cryptography;
using NSec.Cryptography;

namespace Swarm.Transport.Security;

/// <summary>
/// A peer's long-term identity: a static X25519 key pair, the <c>s</c> of the Noise handshake. Its public key
/// names the peer (<see cref="Fingerprint"/> in logs, the full key for pinning and bans); the private key stays
/// inside libsodium's guarded memory once loaded.
/// </summary>
/// <remarks>
/// Threat model: whoever reads the identity file can impersonate this peer to anyone who trusts its key, so the
/// file is created 0600 and refused when others may read it (<see cref="IdentityFile"/>). Losing the file loses the
/// identity (peers that pinned it will refuse the new key); it is not recoverable from anything else.
/// There is deliberately no separate Ed25519 signing key: Noise XX authenticates the X25519 static key itself, and
/// what a signature would vouch for (e.g. the coordinator introducing a peer's key) travels inside a Noise channel
/// that already authenticates the coordinator. A signing key is worth adding only for statements checked offline
/// by third parties.
/// </remarks>
public sealed class NodeIdentity : IDisposable
{
    /// <summary>Environment variable naming Swarm's data directory (the default identity lives there).</summary>
    public const string HomeVariable = "SWARM_HOME";

    /// <summary>The default identity file name inside the data directory.</summary>
    public const string DefaultFileName = "identity";

    private readonly Key _key;

    private NodeIdentity(Key key, string? filePath, bool created)
    {
        _key = key;
        PublicKey = key.PublicKey.Export(KeyBlobFormat.RawPublicKey);
        Fingerprint = PeerKey.Fingerprint(PublicKey.Span);
        FilePath = filePath;
        Created = created;
    }

    /// <summary>The 32-byte X25519 public key.</summary>
    public ReadOnlyMemory<byte> PublicKey { get; }

    /// <summary>The short name of <see cref="PublicKey"/> (<see cref="PeerKey.Fingerprint"/>), e.g. <c>swarm:q3k7…</c>.</summary>
    public string Fingerprint { get; }

    /// <summary>The file the identity was loaded from or created in; null for an in-memory identity.</summary>
    public string? FilePath { get; }

    /// <summary>True when this load created the file (a new identity; worth telling the operator).</summary>
    public bool Created { get; }

    /// <summary>The private key for the Noise handshake (never exported).</summary>
    internal Key PrivateKey => _key;

    /// <summary>
    /// The default identity file: <c>$SWARM_HOME/identity</c>, else <c>$XDG_DATA_HOME/swarm/identity</c>, else
    /// <c>~/.local/share/swarm/identity</c>.
    /// </summary>
    /// <param name="fileName">The file name, so a coordinator and a node sharing a machine can keep separate identities.</param>
    public static string DefaultPath(string fileName = DefaultFileName) =>
        DefaultPath(Environment.GetEnvironmentVariable, Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), fileName);

    /// <summary><see cref="DefaultPath(string)"/> with the environment and home directory supplied (for tests).</summary>
    internal static string DefaultPath(Func<string, string?> environment, string home, string fileName = DefaultFileName)
    {
        var swarmHome = environment(HomeVariable);
        if (!string.IsNullOrWhiteSpace(swarmHome)) return Path.Combine(swarmHome, fileName);
        var dataHome = environment("XDG_DATA_HOME");
        var root = !string.IsNullOrWhiteSpace(dataHome) ? dataHome : Path.Combine(home, ".local", "share");
        return Path.Combine(root, "swarm", fileName);
    }

    /// <summary>
    /// Loads the identity in <paramref name="path"/> (default <see cref="DefaultPath(string)"/>), creating a new key
    /// pair there, 0600, when the file does not exist.
    /// </summary>
    /// <exception cref="IdentityException">The file exists but is accessible by others, unreadable, truncated or corrupt.</exception>
    public static NodeIdentity LoadOrCreate(string? path = null)
    {
        path = Path.GetFullPath(path ?? DefaultPath());
        if (!File.Exists(path))
        {
            var privateKey = RandomNumberGenerator.GetBytes(PeerKey.Length);
            try
            {
                var identity = FromPrivateKey(privateKey, path, created: true);
                bool created;
                try { created = IdentityFile.TryCreate(path, privateKey, identity.PublicKey.Span); }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    identity.Dispose();
                    throw new IdentityException($"Cannot create the identity file {path}: {e.Message}", e);
                }
                if (created) return identity;
                identity.Dispose(); // another process created it first: use theirs
            }
            finally
            {
                CryptographicOperations.ZeroMemory(privateKey);
            }
        }
        return Load(path);
    }

    /// <summary>Loads an existing identity file.</summary>
    /// <exception cref="IdentityException">The file is missing, accessible by others, unreadable, truncated or corrupt.</exception>
    public static NodeIdentity Load(string path)
    {
        path = Path.GetFullPath(path);
        if (!File.Exists(path)) throw new IdentityException($"The identity file {path} does not exist.");
        var privateKey = IdentityFile.Read(path);
        try { return FromPrivateKey(privateKey, path, created: false); }
        finally { CryptographicOperations.ZeroMemory(privateKey); }
    }

    /// <summary>A fresh identity that lives only in memory (tests, throw-away demo swarms).</summary>
    public static NodeIdentity CreateEphemeral()
    {
        var privateKey = RandomNumberGenerator.GetBytes(PeerKey.Length);
        try { return FromPrivateKey(privateKey); }
        finally { CryptographicOperations.ZeroMemory(privateKey); }
    }

    /// <summary>An identity from raw private key bytes (32 bytes, any value: X25519 clamps it).</summary>
    internal static NodeIdentity FromPrivateKey(ReadOnlySpan<byte> privateKey, string? filePath = null, bool created = false)
    {
        if (privateKey.Length != PeerKey.Length)
            throw new ArgumentException($"An X25519 private key is {PeerKey.Length} bytes, not {privateKey.Length}.", nameof(privateKey));
        return new NodeIdentity(Key.Import(KeyAgreementAlgorithm.X25519, privateKey, KeyBlobFormat.RawPrivateKey), filePath, created);
    }

    /// <inheritdoc />
    public override string ToString() => Fingerprint;

    /// <summary>Forgets the private key.</summary>
    public void Dispose() => _key.Dispose();
}
