namespace Swarm.Weights;

/// <summary>
/// A model repository at one revision, in the HF hub's URL layout: every file is at
/// <c>https://HOST/ORG/NAME/resolve/REV/FILE</c> (e.g. EleutherAI/pythia-1.4b at revision <c>step143000</c>).
/// </summary>
public sealed record ModelSource
{
    /// <summary>The revision used when none is given.</summary>
    public const string DefaultRevision = "main";

    /// <summary>The repository's base URL, <c>https://HOST/ORG/NAME</c> (no trailing slash).</summary>
    public Uri Repository { get; }

    /// <summary>Branch, tag or commit, e.g. <c>main</c> or <c>step143000</c>.</summary>
    public string Revision { get; }

    /// <summary>The URL files are resolved under: <c>REPOSITORY/resolve/REV/</c> (with the trailing slash).</summary>
    public Uri ResolveBase { get; }

    /// <summary>Identifies the source in caches and manifests: the resolve base URL as text.</summary>
    public string Key => ResolveBase.AbsoluteUri;

    private ModelSource(Uri repository, string revision)
    {
        Repository = repository;
        Revision = revision;
        ResolveBase = new Uri($"{repository.AbsoluteUri}/resolve/{Uri.EscapeDataString(revision)}/");
    }

    /// <summary>
    /// Parses a repository URL (<c>http(s)://HOST/ORG/NAME</c>, revision from <paramref name="revision"/> or
    /// <see cref="DefaultRevision"/>) or a resolve URL (<c>…/NAME/resolve/REV[/]</c>, which names its revision).
    /// </summary>
    /// <exception cref="ArgumentException">Not an http(s) URL of that shape, or two different revisions given.</exception>
    public static ModelSource Parse(string url, string? revision = null)
    {
        if (!Uri.TryCreate(url?.Trim(), UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            throw new ArgumentException($"'{url}' is not an http(s) URL of a model repository (https://HOST/ORG/NAME)");
        if (!string.IsNullOrEmpty(uri.Query) || !string.IsNullOrEmpty(uri.Fragment))
            throw new ArgumentException($"'{url}': a repository URL has no query or fragment");
        var segments = uri.AbsolutePath.Split('/', StringSplitOptions.RemoveEmptyEntries);
        int resolve = Array.IndexOf(segments, "resolve");
        string[] repoPath = resolve >= 0 ? segments[..resolve] : segments;
        if (repoPath.Length == 0)
            throw new ArgumentException($"'{url}' names no repository (expected https://HOST/ORG/NAME)");
        if (resolve >= 0)
        {
            if (resolve != segments.Length - 2)
                throw new ArgumentException($"'{url}': expected …/ORG/NAME/resolve/REVISION, without a file name");
            string inUrl = Uri.UnescapeDataString(segments[^1]);
            if (revision is not null && revision != inUrl)
                throw new ArgumentException($"'{url}' names revision '{inUrl}' but revision '{revision}' was also given");
            revision = inUrl;
        }
        revision ??= DefaultRevision;
        if (revision.Length == 0) throw new ArgumentException("the revision is empty");
        var repository = new Uri($"{uri.Scheme}://{uri.Authority}/{string.Join('/', repoPath)}");
        return new ModelSource(repository, revision);
    }

    /// <summary>The URL of one file of the repository at this revision.</summary>
    public Uri FileUri(string file) => new(ResolveBase, string.Join('/', file.Split('/').Select(Uri.EscapeDataString)));

    /// <inheritdoc />
    public override string ToString() => Key;
}
