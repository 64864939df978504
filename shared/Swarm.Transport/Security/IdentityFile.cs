using System.Security.Cryptography;
using System.Text;

namespace Swarm.Transport.Security;

/// <summary>
/// Reads and writes the identity file: a short text file holding an X25519 private key and, as a consistency
/// check, its public key.
/// <code>
/// # Swarm identity (X25519). Anyone who reads this file can act as this peer: keep it mode 0600.
/// swarm-identity-v1
/// private &lt;base64 of 32 bytes&gt;
/// public &lt;base64 of 32 bytes&gt;
/// </code>
/// </summary>
/// <remarks>
/// On Unix the file is created 0600 inside a directory created 0700, written to a temporary file and renamed into
/// place (so a crash never leaves half a key, and two processes racing to create it agree on one key). A file that
/// group or others may read or write is refused, as ssh refuses such a private key: its key must be assumed known.
/// </remarks>
internal static class IdentityFile
{
    public const string Header = "swarm-identity-v1";
    private const UnixFileMode OwnerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private const UnixFileMode GroupOrOther = UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute
                                            | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

    /// <summary>Reads the private key of an existing identity file (checking mode and contents).</summary>
    /// <exception cref="IdentityException">The file is readable by others, unreadable, truncated or corrupt.</exception>
    public static byte[] Read(string path)
    {
        CheckMode(path);
        string text;
        try { text = File.ReadAllText(path, Encoding.UTF8); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IdentityException($"Cannot read the identity file {path}: {e.Message}", e);
        }
        return Parse(text, path);
    }

    /// <summary>
    /// Creates the file with <paramref name="privateKey"/> unless it exists already.
    /// </summary>
    /// <returns>True when this call created it; false when another process had created it first.</returns>
    public static bool TryCreate(string path, ReadOnlySpan<byte> privateKey, ReadOnlySpan<byte> publicKey)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        if (OperatingSystem.IsWindows()) Directory.CreateDirectory(directory);
        else Directory.CreateDirectory(directory, OwnerOnly | UnixFileMode.UserExecute);

        var temporary = Path.Combine(directory, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = OwnerOnly;
        try
        {
            using (var stream = new FileStream(temporary, options))
            {
                stream.Write(Encoding.UTF8.GetBytes(Format(privateKey, publicKey)));
                stream.Flush(flushToDisk: true);
            }
            File.Move(temporary, path, overwrite: false);
            return true;
        }
        catch (IOException) when (File.Exists(path))
        {
            return false;
        }
        finally
        {
            File.Delete(temporary);
        }
    }

    /// <summary>The file's text for a key pair.</summary>
    public static string Format(ReadOnlySpan<byte> privateKey, ReadOnlySpan<byte> publicKey) =>
        "# Swarm identity (X25519). Anyone who reads this file can act as this peer: keep it mode 0600.\n"
        + Header + "\n"
        + "private " + Convert.ToBase64String(privateKey) + "\n"
        + "public " + Convert.ToBase64String(publicKey) + "\n";

    /// <summary>The private key in <paramref name="text"/>; the public key must match it.</summary>
    /// <exception cref="IdentityException">The text is not a complete, consistent identity.</exception>
    public static byte[] Parse(string text, string path)
    {
        var lines = text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#')).ToList();
        if (lines.Count == 0) throw Corrupt(path, "the file is empty");
        if (lines[0] != Header) throw Corrupt(path, $"it does not start with '{Header}'");
        var privateKey = Field(lines, "private", path);
        var publicKey = Field(lines, "public", path);
        using var identity = NodeIdentity.FromPrivateKey(privateKey);
        if (!PeerKey.AreEqual(identity.PublicKey.Span, publicKey))
        {
            CryptographicOperations.ZeroMemory(privateKey);
            throw Corrupt(path, "its public key does not belong to its private key");
        }
        return privateKey;
    }

    /// <summary>Refuses a file that group or others may read or write (Unix only).</summary>
    private static void CheckMode(string path)
    {
        if (OperatingSystem.IsWindows()) return;
        UnixFileMode mode;
        try { mode = File.GetUnixFileMode(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IdentityException($"Cannot read the identity file {path}: {e.Message}", e);
        }
        if ((mode & GroupOrOther) != 0)
            throw new IdentityException(
                $"The identity file {path} is accessible by other users (mode {Convert.ToString((int)mode, 8)}); its key must be "
                + $"assumed known. If nobody else could have read it, run 'chmod 600 {path}'; otherwise delete it to create a new identity.");
    }

    private static byte[] Field(List<string> lines, string name, string path)
    {
        var line = lines.FirstOrDefault(l => l.StartsWith(name + " ", StringComparison.Ordinal))
                   ?? throw Corrupt(path, $"the '{name}' line is missing (truncated?)");
        byte[] value;
        try { value = Convert.FromBase64String(line[(name.Length + 1)..].Trim()); }
        catch (FormatException) { throw Corrupt(path, $"the '{name}' key is not valid base64"); }
        if (value.Length != PeerKey.Length) throw Corrupt(path, $"the '{name}' key is {value.Length} bytes, not {PeerKey.Length}");
        return value;
    }

    private static IdentityException Corrupt(string path, string why) =>
        new($"The identity file {path} is corrupt: {why}. Restore it from a backup, or delete it to create a new identity "
            + "(peers that pinned the old public key will then refuse this one).");
}
