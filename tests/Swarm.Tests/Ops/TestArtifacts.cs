namespace Swarm.Tests.Ops;

/// <summary>Where tests keep files for people to look at (screenshots): <c>$SWARM_TEST_ARTIFACTS</c>, else <c>artifacts/test/</c> at the repository root.</summary>
public static class TestArtifacts
{
    /// <summary>The directory (created).</summary>
    public static string Directory
    {
        get
        {
            string? configured = Environment.GetEnvironmentVariable("SWARM_TEST_ARTIFACTS");
            string dir = !string.IsNullOrWhiteSpace(configured) ? Path.GetFullPath(configured) : Path.Combine(RepoRoot(), "artifacts", "test");
            System.IO.Directory.CreateDirectory(dir);
            return dir;
        }
    }

    /// <summary>The repository root: the nearest ancestor of the test binaries holding <c>Swarm.sln</c>.</summary>
    public static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Swarm.sln"))) return dir.FullName;
        throw new InvalidOperationException($"no Swarm.sln above {AppContext.BaseDirectory}; run the tests from the repository's build output");
    }
}
