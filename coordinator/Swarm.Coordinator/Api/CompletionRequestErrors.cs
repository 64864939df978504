using System.Text.Json.Serialization;

namespace Swarm.Coordinator.Api;

/// <summary>An error body in OpenAI's shape: <c>{"error":{"message":…,"type":…,"param":…,"code":…}}</c>.</summary>
/// <param name="Error">The error.</param>
internal sealed record OpenAiErrorResponse([property: JsonPropertyName("error")] OpenAiError Error)
{
    /// <summary>
    /// HTTP 400 body for a request that failed validation: the message lists every problem, <c>param</c> and
    /// <c>code</c> are the first problem's, and the extension field <c>errors</c> carries them all.
    /// </summary>
    public static OpenAiErrorResponse InvalidRequest(IReadOnlyList<ValidationError> errors)
    {
        ArgumentNullException.ThrowIfNull(errors);
        ArgumentOutOfRangeException.ThrowIfZero(errors.Count);
        string message = string.Join("; ", errors.Select(e => e.Field == "body" ? e.Message : $"{e.Field}: {e.Message}"));
        return new OpenAiErrorResponse(new OpenAiError
        {
            Message = message,
            Type = "invalid_request_error",
            Param = errors[0].Field == "body" ? null : errors[0].Field,
            Code = errors[0].Code,
            Errors = [.. errors.Select(e => new OpenAiErrorDetail(e.Field, e.Message, e.Code))],
        });
    }

    /// <summary>An <c>invalid_request_error</c> with one message (404, 405, 408, a chat request to a base model, …).</summary>
    /// <param name="message">What is wrong and, where it helps, what to do instead.</param>
    /// <param name="code">Machine-readable code.</param>
    /// <param name="param">The offending request field, if one.</param>
    public static OpenAiErrorResponse InvalidRequest(string message, string code, string? param = null) =>
        new(new OpenAiError { Message = message, Type = "invalid_request_error", Param = param, Code = code });

    /// <summary>HTTP 503 body when the swarm cannot serve the job (e.g. uncovered layers; the message names them).</summary>
    public static OpenAiErrorResponse ServiceUnavailable(string message, string code = "layers_uncovered") =>
        new(new OpenAiError { Message = message, Type = "service_unavailable_error", Code = code });

    /// <summary>HTTP 429 body when the job queue is full.</summary>
    public static OpenAiErrorResponse Overloaded(string message) =>
        new(new OpenAiError { Message = message, Type = "rate_limit_error", Code = "queue_full" });

    /// <summary>HTTP 500 body for a job that failed inside the swarm.</summary>
    public static OpenAiErrorResponse ServerError(string message, string? code = null) =>
        new(new OpenAiError { Message = message, Type = "server_error", Code = code });
}

/// <summary>The inner error object.</summary>
internal sealed record OpenAiError
{
    /// <summary>Human-readable description.</summary>
    [JsonPropertyName("message")] public required string Message { get; init; }

    /// <summary><c>invalid_request_error</c>, <c>service_unavailable_error</c>, <c>rate_limit_error</c> or <c>server_error</c>.</summary>
    [JsonPropertyName("type")] public required string Type { get; init; }

    /// <summary>The offending request field, if one.</summary>
    [JsonPropertyName("param")] public string? Param { get; init; }

    /// <summary>Machine-readable code, if any.</summary>
    [JsonPropertyName("code")] public string? Code { get; init; }

    /// <summary>Extension: every validation problem (omitted when there are none).</summary>
    [JsonPropertyName("errors")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<OpenAiErrorDetail>? Errors { get; init; }
}

/// <summary>One validation problem in <see cref="OpenAiError.Errors"/>.</summary>
/// <param name="Field">Request field.</param>
/// <param name="Message">What is wrong.</param>
/// <param name="Code">Machine code (see <see cref="ValidationError.Code"/>).</param>
internal sealed record OpenAiErrorDetail(
    [property: JsonPropertyName("field")] string Field,
    [property: JsonPropertyName("message")] string Message,
    [property: JsonPropertyName("code")] string Code);
