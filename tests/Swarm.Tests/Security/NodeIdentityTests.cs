using System.Runtime.Versioning;
using Swarm.Transport.Security;
using Xunit;

namespace Swarm.Tests.Security;

[UnsupportedOSPlatform("windows")] // file modes are Unix's
public sealed class NodeIdentityTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "swarm-identity-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private string PathIn(string name = "identity") => Path.Combine(_dir, "data", name);

    [Fact]
    public void LoadOrCreate_NoFile_CreatesOwnerOnlyFileAndReloadsTheSameKey()
    {
        var path = PathIn();
        byte[] publicKey;
        using (var created = NodeIdentity.LoadOrCreate(path))
        {
            Assert.True(created.Created);
            Assert.Equal(path, created.FilePath);
            publicKey = created.PublicKey.ToArray();
        }
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(Path.GetDirectoryName(path)!));
        Assert.Single(Directory.GetFiles(Path.GetDirectoryName(path)!)); // no temporary file left behind

        using var loaded = NodeIdentity.LoadOrCreate(path);
        Assert.False(loaded.Created);
        Assert.Equal(publicKey, loaded.PublicKey.ToArray());
        Assert.Equal(PeerKey.Fingerprint(publicKey), loaded.Fingerprint);
    }

    [Fact]
    public async Task LoadOrCreate_ConcurrentFirstStarts_AgreeOnOneKey()
    {
        var path = PathIn();
        var identities = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(() => NodeIdentity.LoadOrCreate(path))));
        try
        {
            Assert.Single(identities.Select(i => i.Fingerprint).Distinct());
            Assert.Single(identities, i => i.Created);
        }
        finally
        {
            foreach (var i in identities) i.Dispose();
        }
    }

    [Theory]
    [InlineData(UnixFileMode.GroupRead)]
    [InlineData(UnixFileMode.OtherRead)]
    [InlineData(UnixFileMode.OtherWrite)]
    public void Load_FileAccessibleByOthers_IsRefusedWithChmodHint(UnixFileMode extra)
    {
        var path = PathIn();
        NodeIdentity.LoadOrCreate(path).Dispose();
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | extra);

        var ex = Assert.Throws<IdentityException>(() => NodeIdentity.LoadOrCreate(path));
        Assert.Contains("accessible by other users", ex.Message);
        Assert.Contains($"chmod 600 {path}", ex.Message);
    }

    [Fact]
    public void Load_TruncatedFile_ReportsCorrupt()
    {
        var path = PathIn();
        NodeIdentity.LoadOrCreate(path).Dispose();
        var text = File.ReadAllText(path);
        File.WriteAllText(path, text[..(text.IndexOf("public ", StringComparison.Ordinal) + 12)]);

        var ex = Assert.Throws<IdentityException>(() => NodeIdentity.Load(path));
        Assert.Contains($"The identity file {path} is corrupt", ex.Message);
        Assert.Contains("'public' key", ex.Message);
    }

    [Fact]
    public void Load_EmptyFile_ReportsCorrupt()
    {
        var path = PathIn();
        NodeIdentity.LoadOrCreate(path).Dispose();
        File.WriteAllText(path, "");
        Assert.Contains("the file is empty", Assert.Throws<IdentityException>(() => NodeIdentity.Load(path)).Message);
    }

    [Fact]
    public void Load_AlteredPrivateKey_ReportsMismatchedPublicKey()
    {
        var path = PathIn();
        NodeIdentity.LoadOrCreate(path).Dispose();
        var lines = File.ReadAllLines(path);
        int i = Array.FindIndex(lines, l => l.StartsWith("private ", StringComparison.Ordinal));
        var key = Convert.FromBase64String(lines[i]["private ".Length..]);
        key[5] ^= 0x10;
        lines[i] = "private " + Convert.ToBase64String(key);
        File.WriteAllLines(path, lines);

        var ex = Assert.Throws<IdentityException>(() => NodeIdentity.Load(path));
        Assert.Contains("public key does not belong to its private key", ex.Message);
    }

    [Fact]
    public void Load_MissingFile_SaysSo()
    {
        var ex = Assert.Throws<IdentityException>(() => NodeIdentity.Load(PathIn("nope")));
        Assert.Contains("does not exist", ex.Message);
    }

    [Fact]
    public void DefaultPath_PrefersSwarmHomeThenXdgDataHomeThenHome()
    {
        Dictionary<string, string?> env = new() { ["SWARM_HOME"] = "/srv/swarm", ["XDG_DATA_HOME"] = "/xdg" };
        Assert.Equal("/srv/swarm/identity", NodeIdentity.DefaultPath(k => env.GetValueOrDefault(k), "/home/ann"));
        env["SWARM_HOME"] = "";
        Assert.Equal("/xdg/swarm/identity", NodeIdentity.DefaultPath(k => env.GetValueOrDefault(k), "/home/ann"));
        env.Remove("XDG_DATA_HOME");
        Assert.Equal("/home/ann/.local/share/swarm/coordinator.identity",
            NodeIdentity.DefaultPath(k => env.GetValueOrDefault(k), "/home/ann", "coordinator.identity"));
    }

    [Fact]
    public void Fingerprint_IsBase32OfTheFirst80BitsOfSha256()
    {
        // python3: base64.b32encode(hashlib.sha256(bytes(range(32))).digest()[:10]).lower()
        var key = Enumerable.Range(0, 32).Select(i => (byte)i).ToArray();
        Assert.Equal("swarm:mmg42klgyqzwneis", PeerKey.Fingerprint(key));
    }

    [Fact]
    public void PeerKey_FormatAndParse_RoundTripAndRejectFingerprints()
    {
        using var identity = NodeIdentity.CreateEphemeral();
        var text = PeerKey.Format(identity.PublicKey.Span);
        Assert.True(PeerKey.TryParse($"  {text.ToUpperInvariant()} ", out var parsed, out var error), error);
        Assert.Equal(identity.PublicKey.ToArray(), parsed);

        Assert.False(PeerKey.TryParse(identity.Fingerprint, out _, out error));
        Assert.Contains("is a fingerprint", error);
        Assert.False(PeerKey.TryParse(text[..62], out _, out error));
        Assert.Contains("64 hex digits", error);
    }
}
