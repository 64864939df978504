using System.CommandLine;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Swarm.Hosting;

namespace Swarm.Coordinator.Security;

/// <summary>
/// The flags of the coordinator's clients (<c>swarm generate</c>, <c>swarm status</c>): <c>--api-key KEY</c> (or
/// <c>SWARM_API_KEY</c>) and <c>--cacert FILE</c>.
/// </summary>
public sealed class CoordinatorClientFlags
{
    /// <summary>Environment variable read when <c>--api-key</c> is not given.</summary>
    public const string ApiKeyEnvironmentVariable = "SWARM_API_KEY";

    /// <summary><c>--api-key KEY</c>.</summary>
    public Option<string?> ApiKey { get; } = new("--api-key")
    {
        Description = $"Key the coordinator asks for (sent as Authorization: Bearer KEY); default ${ApiKeyEnvironmentVariable}",
    };

    /// <summary><c>--cacert FILE</c>.</summary>
    public Option<string?> CaCert { get; } = new("--cacert")
    {
        Description = "PEM file with the CA (or the certificate) to trust for the coordinator's HTTPS, besides the system store",
    };

    /// <summary>Adds both flags to <paramref name="command"/>.</summary>
    public void AddTo(Command command)
    {
        ArgumentNullException.ThrowIfNull(command);
        command.Options.Add(ApiKey);
        command.Options.Add(CaCert);
    }

    /// <summary>The credentials given (the flag, else <c>SWARM_API_KEY</c>).</summary>
    /// <exception cref="UsageException"><c>--cacert</c> names no file.</exception>
    public CoordinatorClientCredentials Read(ParseResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        string? key = result.GetValue(ApiKey) is { Length: > 0 } k ? k
            : Environment.GetEnvironmentVariable(ApiKeyEnvironmentVariable) is { Length: > 0 } e ? e : null;
        string? ca = result.GetValue(CaCert);
        if (ca is not null && !File.Exists(ca)) throw new UsageException($"--cacert: file not found: {ca}");
        return new CoordinatorClientCredentials(key?.Trim(), ca);
    }

    /// <summary>Reads the certificates of a <c>--cacert</c> file.</summary>
    /// <exception cref="UsageException">Unreadable, or no PEM certificate in it.</exception>
    public static X509Certificate2Collection LoadAnchors(string file)
    {
        var anchors = new X509Certificate2Collection();
        try { anchors.ImportFromPemFile(file); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or CryptographicException)
        {
            throw new UsageException($"--cacert: cannot read {file}: {e.Message.ReplaceLineEndings(" ")}");
        }
        if (anchors.Count == 0) throw new UsageException($"--cacert: {file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
        return anchors;
    }
}
