namespace Swarm.Weights;

/// <summary>
/// Sums bytes reported from parallel downloads and forwards (done, total) to one <see cref="IProgress{T}"/> at a time
/// (console progress bars expect a single writer).
/// </summary>
internal sealed class ProgressCounter(IProgress<(long done, long total)>? progress, long total)
{
    private readonly Lock _gate = new();
    private long _done;

    /// <summary>Bytes counted so far.</summary>
    public long Done { get { lock (_gate) return _done; } }

    /// <summary>Adds <paramref name="bytes"/> (negative when a download is discarded) and reports.</summary>
    public void Add(long bytes)
    {
        lock (_gate)
        {
            _done += bytes;
            progress?.Report((_done, total));
        }
    }
}
