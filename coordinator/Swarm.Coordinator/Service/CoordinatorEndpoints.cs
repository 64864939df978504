using System.Text.Json;
using System.Text.Json.Serialization;

namespace Swarm.Coordinator.Service;

/// <summary>
/// The addresses a running coordinator is bound to, as written to its <c>--ready-file</c> once both the node
/// listener and the HTTP API are bound: <c>{"listen":"127.0.0.1:7700","http":"http://127.0.0.1:8080","key":"…"}</c>.
/// With <c>--listen 127.0.0.1:0 --http 127.0.0.1:0</c> the operating system picks free ports and a launcher
/// (LocalSwarm, tests) learns them here, so nobody has to guess a free port and race another process for it.
/// </summary>
/// <param name="Listen">Node-facing UDP endpoint, HOST:PORT.</param>
/// <param name="Http">Base URL of the HTTP API, e.g. <c>http://127.0.0.1:8080</c> (no trailing slash).</param>
/// <param name="Key">The coordinator's public key as 64 hex digits: what nodes pin with <c>--coordinator-key</c>.</param>
public sealed record CoordinatorEndpoints(
    [property: JsonPropertyName("listen")] string Listen,
    [property: JsonPropertyName("http")] string Http,
    [property: JsonPropertyName("key")] string? Key = null)
{
    /// <summary>Writes the file atomically (a temporary file renamed into place), so a reader never sees half of it.</summary>
    public void Write(string path)
    {
        string full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        string temp = $"{full}.{Environment.ProcessId}.tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(this));
        File.Move(temp, full, overwrite: true);
    }

    /// <summary>Reads a ready file written by <see cref="Write"/>.</summary>
    /// <exception cref="InvalidDataException">The file is not a ready file.</exception>
    public static CoordinatorEndpoints Read(string path)
    {
        string text = File.ReadAllText(path);
        CoordinatorEndpoints? e;
        try { e = JsonSerializer.Deserialize<CoordinatorEndpoints>(text); }
        catch (JsonException ex) { throw new InvalidDataException($"{path} is not a coordinator ready file: {ex.Message}", ex); }
        if (e is null || string.IsNullOrEmpty(e.Listen) || string.IsNullOrEmpty(e.Http))
            throw new InvalidDataException($"{path} is not a coordinator ready file (needs \"listen\" and \"http\"): {text}");
        return e;
    }
}
