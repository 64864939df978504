using System.Collections.Concurrent;
using System.Text;
using NSec.Cryptography;

namespace Swarm.Transport.Security;

/// <summary>
/// Turns the swarm secret (text an operator typed) into the 32-byte pre-shared key of <c>Noise_XXpsk3</c>, with
/// Argon2id (RFC 9106) from libsodium: 64 MiB of memory, 3 passes, 1 lane, and a fixed 16-byte salt
/// <c>"swarm-psk-v1"</c> padded with zeros.
/// </summary>
/// <remarks>
/// <para>Why a password hash and not HKDF: the secret is chosen by people and may be guessable. An active attacker
/// who answers a handshake as a responder (an unpinned coordinator address, a spoofed node) sees the initiator's
/// message 3, which is encrypted under the PSK, and can test guesses of the secret against it offline. Each guess
/// then costs one Argon2id evaluation (64 MiB, 3 passes ≈ 0.1–0.3 s of one core) instead of one HMAC, a factor of
/// roughly 10^6. HKDF would be enough only if the secret were required to be a random 32-byte key; we do not require
/// that, so we pay ~0.2 s once per process start. Pinning the coordinator key (<c>--coordinator-key</c>) removes
/// the offline attack altogether: the initiator aborts before message 3 when the responder is not the pinned key.</para>
/// <para>The salt is fixed because both sides must derive the same key without a round trip; a per-swarm salt would
/// need to be distributed with the secret. The fixed salt allows one precomputed table of popular secrets for every
/// Swarm deployment — so use a random secret (e.g. <c>openssl rand -base64 32</c>); the KDF only slows guessing.</para>
/// <para>Derived keys are memoised per process (an in-process test starts many transports with one secret).</para>
/// </remarks>
internal static class SwarmPsk
{
    /// <summary>Argon2id memory in KiB (64 MiB).</summary>
    public const long MemoryKiB = 64 * 1024;

    /// <summary>Argon2id passes over the memory.</summary>
    public const long Passes = 3;

    private static readonly byte[] Salt = "swarm-psk-v1\0\0\0\0"u8.ToArray();
    private static readonly ConcurrentDictionary<string, byte[]> Derived = new(StringComparer.Ordinal);

    /// <summary>The PSK for <paramref name="secret"/>; null for a null or empty secret (an open swarm: Noise_XX).</summary>
    public static byte[]? Derive(string? secret)
    {
        if (string.IsNullOrEmpty(secret)) return null;
        return Derived.GetOrAdd(secret, static s =>
        {
            var algorithm = PasswordBasedKeyDerivationAlgorithm.Argon2id(new Argon2Parameters
            {
                DegreeOfParallelism = 1,
                MemorySize = MemoryKiB,
                NumberOfPasses = Passes,
            });
            return algorithm.DeriveBytes(Encoding.UTF8.GetBytes(s), Salt, SecureChannelOptions.PskLength);
        }).ToArray();
    }
}
