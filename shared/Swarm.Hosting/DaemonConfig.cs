using System.CommandLine;
using Microsoft.Extensions.Configuration;

namespace Swarm.Hosting;

/// <summary>
/// Layers a daemon's settings: a JSON configuration file (<c>--config</c>, section "Node" or "Coordinator"),
/// then environment variables (<c>SWARM_NODE__MODEL</c>, <c>SWARM_COORDINATOR__HTTP</c>, and <c>SWARM_SECRET</c>
/// for the secret), then the flags given on the command line — later sources win. Flags are declared once
/// here with the configuration key they set, so help text, binding and validation agree. A list setting
/// (<see cref="ListFlag"/>) is a repeatable flag, a JSON array in the file, or one comma-separated string.
/// </summary>
public sealed class DaemonConfig
{
    private readonly string _section;
    private readonly List<(Option Option, string Key)> _flags = [];
    public Option<string?> ConfigFile { get; } = new("--config") { Description = "JSON configuration file (see deploy/swarm.example.json)" };

    public DaemonConfig(string section) => _section = section;

    public Option<T> Flag<T>(string name, string key, string description, params string[] aliases)
    {
        var o = new Option<T>(name, aliases) { Description = description };
        _flags.Add((o, key));
        return o;
    }

    /// <summary>
    /// A repeatable flag bound to a list property (<c>List&lt;string&gt;</c>) of the options. Its value comes, first
    /// found wins, from the flag given once or more; the environment variable <c>SWARM_</c><paramref name="shorthandEnv"/>
    /// (comma-separated); the section's key as one comma-separated string (<c>SWARM_COORDINATOR__APIKEYS=a,b</c>) or as a
    /// JSON array in the file. Empty entries are dropped.
    /// </summary>
    public Option<string[]> ListFlag(string name, string key, string description, string? shorthandEnv = null)
    {
        var o = new Option<string[]>(name) { Description = description, Arity = ArgumentArity.OneOrMore };
        _lists.Add((o, key, shorthandEnv));
        return o;
    }

    private readonly List<(Option<string[]> Option, string Key, string? ShorthandEnv)> _lists = [];

    /// <summary>A duration flag: "30s", "500ms", "2m" or a plain number of seconds (config files use "00:00:30").</summary>
    public Option<string> Duration(string name, string key, string description)
    {
        var o = Flag<string>(name, key, description + " (e.g. 30s, 500ms)");
        _durations.Add(o);
        return o;
    }

    private readonly HashSet<Option> _durations = [];

    public static TimeSpan ParseDuration(string text, string flag)
    {
        text = text.Trim();
        double mult = 1;
        if (text.EndsWith("ms")) { mult = 0.001; text = text[..^2]; }
        else if (text.EndsWith('s')) text = text[..^1];
        else if (text.EndsWith('m')) { mult = 60; text = text[..^1]; }
        else if (text.Contains(':') && TimeSpan.TryParse(text, System.Globalization.CultureInfo.InvariantCulture, out var ts)) return ts;
        if (double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v) && v >= 0)
            return TimeSpan.FromSeconds(v * mult);
        throw new UsageException($"{flag}: '{text}' is not a duration (e.g. 30s, 500ms, 2m, or seconds)");
    }

    public void AddTo(Command c)
    {
        c.Options.Add(ConfigFile);
        foreach (var (o, _) in _flags) c.Options.Add(o);
        foreach (var (o, _, _) in _lists) c.Options.Add(o);
    }

    /// <summary>Builds the layered configuration and binds the section onto a new <typeparamref name="T"/>.</summary>
    public T Bind<T>(ParseResult r) where T : new()
    {
        var builder = new ConfigurationBuilder();
        if (r.GetValue(ConfigFile) is { } file)
        {
            if (!File.Exists(file)) throw new UsageException($"--config: file not found: {file}");
            builder.AddJsonFile(Path.GetFullPath(file), optional: false);
        }
        builder.AddEnvironmentVariables("SWARM_");
        var given = new Dictionary<string, string?>();
        foreach (var (o, key) in _flags)
        {
            var result = r.GetResult(o);
            if (result is null || result.Implicit) continue;
            object? value = result.GetValueOrDefault<object?>();
            if (_durations.Contains(o)) value = ParseDuration((string)value!, o.Name).ToString("c", System.Globalization.CultureInfo.InvariantCulture);
            given[$"{_section}:{key}"] = value switch
            {
                bool b => b ? "true" : "false",
                IFormattable f => f.ToString(null, System.Globalization.CultureInfo.InvariantCulture),
                _ => value?.ToString(),
            };
        }
        builder.AddInMemoryCollection(given);
        IConfiguration cfg;
        try { cfg = builder.Build(); }
        catch (Exception e) when (e is InvalidDataException or FormatException) { throw new UsageException($"--config: {e.Message}"); }
        var options = new T();
        try { cfg.GetSection(_section).Bind(options); }
        catch (InvalidOperationException e) { throw new UsageException($"configuration: {e.Message}"); }
        // SWARM_SECRET is the documented shorthand for the secret.
        var secretProp = typeof(T).GetProperty("Secret");
        if (secretProp is not null && secretProp.GetValue(options) is null && cfg["SECRET"] is { Length: > 0 } s) secretProp.SetValue(options, s);
        foreach (var (o, key, shorthand) in _lists)
        {
            var prop = typeof(T).GetProperty(key) ?? throw new InvalidOperationException($"{typeof(T).Name} has no property {key} for {o.Name}");
            prop.SetValue(options, ListValue(r, o, cfg, $"{_section}:{key}", shorthand));
        }
        return options;
    }

    private static List<string> ListValue(ParseResult r, Option<string[]> flag, IConfiguration cfg, string key, string? shorthandEnv)
    {
        if (r.GetResult(flag) is { Implicit: false } given) return Entries(given.GetValueOrDefault<string[]>() ?? []);
        if (shorthandEnv is not null && cfg[shorthandEnv] is { Length: > 0 } env) return Entries([env]);
        var section = cfg.GetSection(key);
        // A scalar (an environment variable, or a string in the file) is one comma-separated list; children are an array.
        if (section.Value is { Length: > 0 } one) return Entries([one]);
        return Entries(section.GetChildren().Select(c => c.Value ?? ""));
    }

    private static List<string> Entries(IEnumerable<string> values) =>
        values.SelectMany(v => v.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)).ToList();
}
