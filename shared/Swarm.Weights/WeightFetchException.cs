using System.Net;

namespace Swarm.Weights;

/// <summary>
/// Weights could not be fetched: the source is unreachable or answered wrongly, a tensor failed verification, or the
/// cache could not be written. The message says what, where (URL, tensor, path) and, where it helps, what to do.
/// </summary>
public sealed class WeightFetchException : Exception
{
    /// <summary>Creates the exception with its message.</summary>
    public WeightFetchException(string message) : base(message) { }

    /// <summary>Creates the exception with its message and the error that caused it.</summary>
    public WeightFetchException(string message, Exception inner) : base(message, inner) { }

    /// <summary>Creates the exception for an HTTP error answer.</summary>
    public WeightFetchException(string message, HttpStatusCode status) : base(message) => StatusCode = status;

    /// <summary>Creates the exception; <paramref name="transient"/> marks a source that may succeed when asked again later.</summary>
    public WeightFetchException(string message, bool transient) : base(message) => IsTransient = transient;

    /// <summary>The HTTP status of an error answer (null when the failure was not an HTTP error status).</summary>
    public HttpStatusCode? StatusCode { get; }

    /// <summary>
    /// True when the source may well succeed on a later try: a peer that does not hold the tensor yet (it is still
    /// fetching it), is over its upload rate limit, or did not answer in time. The fetcher asks such a source once more
    /// after every other source failed.
    /// </summary>
    public bool IsTransient { get; }
}
