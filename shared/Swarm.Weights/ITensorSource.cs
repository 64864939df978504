namespace Swarm.Weights;

/// <summary>
/// Somewhere a tensor's bytes can be fetched from: the model's URL, a mirror of it, another node of the swarm. What a source sends
/// is never trusted: the fetcher checks every tensor against the manifest before it is used.
/// </summary>
public interface ITensorSource
{
    /// <summary>Names the source in progress and error messages, e.g. its URL.</summary>
    string Name { get; }

    /// <summary>
    /// Copies the tensor's bytes from <paramref name="offset"/> (relative to its first byte) to its end into
    /// <paramref name="destination"/>, reporting each chunk written to <paramref name="onBytes"/>.
    /// </summary>
    /// <exception cref="WeightFetchException">The source failed or sent fewer bytes (the ones written are kept).</exception>
    Task CopyAsync(RemoteTensor tensor, long offset, Stream destination, Action<int> onBytes, CancellationToken ct);
}

/// <summary>A repository revision served over HTTP with range support (the model's URL or a mirror with the same files).</summary>
internal sealed class HttpTensorSource(ModelSource source, HttpRangeReader http) : ITensorSource
{
    /// <summary>The repository revision's URL.</summary>
    public string Name => source.Key;

    /// <inheritdoc />
    public Task CopyAsync(RemoteTensor tensor, long offset, Stream destination, Action<int> onBytes, CancellationToken ct) =>
        http.CopyRangeAsync(source.FileUri(tensor.File), tensor.Offset + offset, tensor.Offset + tensor.Length, destination, onBytes, ct);
}
