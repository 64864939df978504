using System.Security.Cryptography;

namespace Swarm.Transport.Security;

/// <summary>
/// A Noise handshake or transport operation failed: a message did not authenticate, was malformed, or the state
/// machine was used out of order. The message says which, in words meant for an operator's log.
/// </summary>
internal sealed class NoiseException : CryptographicException
{
    /// <summary>Creates the exception with an operator-readable message.</summary>
    public NoiseException(string message) : base(message) { }

    /// <summary>Creates the exception with an operator-readable message and the underlying cause.</summary>
    public NoiseException(string message, Exception inner) : base(message, inner) { }
}
