using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using OpenTelemetry;

namespace Swarm.Hosting;

/// <summary>
/// A debugging aid (<c>SWARM_TRACE_FILE=/path</c>): appends one JSON object per finished span to a file —
/// <c>trace_id</c>, <c>span_id</c>, <c>parent_id</c> (null for a root), <c>name</c>, <c>kind</c>, <c>service</c>,
/// <c>instance</c>, <c>start</c>, <c>duration_ms</c>, <c>status</c>, <c>status_description</c>, <c>tags</c> and
/// <c>events</c> (<c>name</c>, <c>time</c>, <c>tags</c>). Lets you (and the cross-process tests) see a job's trace
/// without a collector; use a file per process. Not meant for production volumes: it writes synchronously.
/// </summary>
internal sealed class JsonLinesActivityExporter : BaseExporter<Activity>
{
    private readonly string _path;
    private readonly object _gate = new();
    private string? _service, _instance;

    public JsonLinesActivityExporter(string path)
    {
        _path = Path.GetFullPath(path);
        if (Path.GetDirectoryName(_path) is { } dir) Directory.CreateDirectory(dir);
    }

    public override ExportResult Export(in Batch<Activity> batch)
    {
        if (_service is null)
        {
            var attributes = ParentProvider?.GetResource().Attributes ?? [];
            foreach (var (key, value) in attributes)
            {
                if (key == "service.name") _service = value?.ToString();
                else if (key == "service.instance.id") _instance = value?.ToString();
            }
            _service ??= "";
        }
        using var buffer = new MemoryStream();
        foreach (var activity in batch)
        {
            using (var w = new Utf8JsonWriter(buffer))
                Write(w, activity);
            buffer.WriteByte((byte)'\n');
        }
        try
        {
            lock (_gate)
            {
                using var file = new FileStream(_path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite);
                buffer.Position = 0;
                buffer.CopyTo(file);
            }
            return ExportResult.Success;
        }
        catch (IOException) { return ExportResult.Failure; }
        catch (UnauthorizedAccessException) { return ExportResult.Failure; }
    }

    private void Write(Utf8JsonWriter w, Activity a)
    {
        w.WriteStartObject();
        w.WriteString("trace_id", a.TraceId.ToHexString());
        w.WriteString("span_id", a.SpanId.ToHexString());
        if (a.ParentSpanId == default) w.WriteNull("parent_id");
        else w.WriteString("parent_id", a.ParentSpanId.ToHexString());
        w.WriteString("name", a.DisplayName);
        w.WriteString("kind", a.Kind.ToString().ToLowerInvariant());
        w.WriteString("service", _service);
        w.WriteString("instance", _instance);
        w.WriteString("start", a.StartTimeUtc.ToString("O", CultureInfo.InvariantCulture));
        w.WriteNumber("duration_ms", Math.Round(a.Duration.TotalMilliseconds, 3));
        w.WriteString("status", a.Status.ToString().ToLowerInvariant());
        if (a.StatusDescription is { } d) w.WriteString("status_description", d);
        w.WriteStartObject("tags");
        foreach (var (key, value) in a.TagObjects) WriteValue(w, key, value);
        w.WriteEndObject();
        w.WriteStartArray("events");
        foreach (var e in a.Events)
        {
            w.WriteStartObject();
            w.WriteString("name", e.Name);
            w.WriteString("time", e.Timestamp.UtcDateTime.ToString("O", CultureInfo.InvariantCulture));
            w.WriteStartObject("tags");
            foreach (var (key, value) in e.Tags) WriteValue(w, key, value);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static void WriteValue(Utf8JsonWriter w, string key, object? value)
    {
        switch (value)
        {
            case null: w.WriteNull(key); break;
            case bool b: w.WriteBoolean(key, b); break;
            case int or long or short or byte or uint: w.WriteNumber(key, Convert.ToInt64(value, CultureInfo.InvariantCulture)); break;
            case ulong u: w.WriteNumber(key, u); break;
            case double x when double.IsFinite(x): w.WriteNumber(key, x); break;
            case float f when float.IsFinite(f): w.WriteNumber(key, f); break;
            default: w.WriteString(key, Convert.ToString(value, CultureInfo.InvariantCulture)); break;
        }
    }
}
