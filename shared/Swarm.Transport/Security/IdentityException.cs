namespace Swarm.Transport.Security;

/// <summary>
/// An identity file cannot be used: unreadable by others is required, and it must hold a well-formed key. The
/// message names the file, what is wrong and what to do about it.
/// </summary>
public sealed class IdentityException : Exception
{
    /// <summary>Creates the exception.</summary>
    public IdentityException(string message) : base(message) { }

    /// <summary>Creates the exception with the underlying cause.</summary>
    public IdentityException(string message, Exception inner) : base(message, inner) { }
}
